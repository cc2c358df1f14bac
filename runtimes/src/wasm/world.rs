//! Which world a component targets, checked against the worlds in the
//! top-level `wit/` (package `skiff:pods`), whose interface lists build.rs
//! embeds: the component's exports pick the world (`http-pod` when it exports
//! `wasi:http/incoming-handler`, `command-pod` when it exports `wasi:cli/run`),
//! and each of its imports must be an interface of that world.
//!
//! Names match as wasmtime's linker matches them: exactly, or on the same
//! semver track (`wasi:cli/environment@0.2.0` is served by `@0.2.12`); a
//! pre-release version matches only itself.

use super::WasmError;

/// One world of `wit/`: the interfaces it imports and exports, fully
/// qualified (`wasi:http/types@0.2.12`).
#[derive(Debug)]
pub(crate) struct WitWorld {
    /// The world's name in its package (`http-pod`).
    pub name: &'static str,
    /// Fully qualified (`skiff:pods/http-pod@0.1.0`).
    pub id: &'static str,
    pub imports: &'static [&'static str],
    pub exports: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/worlds.rs"));

/// The worlds Skiff runs, from the interfaces a component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `skiff:pods/http-pod`: exports `wasi:http/incoming-handler`; served per request.
    Http,
    /// `skiff:pods/command-pod`: exports `wasi:cli/run`; runs to an exit code.
    Command,
}

impl World {
    /// The world's name in `wit/`'s `skiff:pods` package.
    pub fn wit_name(self) -> &'static str {
        match self {
            World::Http => "http-pod",
            World::Command => "command-pod",
        }
    }

    fn from_wit_name(name: &str) -> Option<World> {
        [World::Http, World::Command]
            .into_iter()
            .find(|w| w.wit_name() == name)
    }
}

/// The world whose exports a component exports (the first in `wit/`'s order
/// when it exports several), after checking that the world provides every
/// interface the component imports. When its exports fit no world, an import
/// that no world provides is the error, else what it exports. `imports` and
/// `exports` are the names in the component's type.
pub fn check<I, E>(imports: I, exports: E) -> Result<World, WasmError>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
    E: IntoIterator,
    E::Item: AsRef<str>,
{
    let exports: Vec<E::Item> = exports.into_iter().collect();
    let exported = |name: &str| exports.iter().any(|e| same_interface(e.as_ref(), name));
    let fits = WORLDS.iter().find_map(|t| {
        let w = World::from_wit_name(t.name)?;
        (!t.exports.is_empty() && t.exports.iter().all(|e| exported(e))).then_some((w, t))
    });
    let provided = |import: &str| match fits {
        Some((_, t)) => t.imports.iter().any(|p| same_interface(p, import)),
        None => WORLDS
            .iter()
            .any(|t| t.imports.iter().any(|p| same_interface(p, import))),
    };
    let missing: Vec<String> = imports
        .into_iter()
        .filter(|i| !provided(i.as_ref()))
        .map(|i| i.as_ref().to_string())
        .collect();
    match fits {
        _ if !missing.is_empty() => Err(WasmError::UnsupportedImport {
            import: missing.join(", "),
        }),
        Some((world, _)) => Ok(world),
        None => Err(WasmError::UnsupportedWorld {
            reason: no_world(&exports),
        }),
    }
}

/// Why no world fits: what the component exports and what each world needs.
fn no_world<S: AsRef<str>>(exports: &[S]) -> String {
    let has = if exports.is_empty() {
        "nothing".to_string()
    } else {
        exports
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let needs: Vec<String> = WORLDS
        .iter()
        .filter(|t| World::from_wit_name(t.name).is_some())
        .map(|t| format!("{} exports {}", t.id, t.exports.join(", ")))
        .collect();
    format!("it exports {has}; {}", needs.join("; "))
}

/// Whether `a` and `b` name the same interface for the linker: equal, or
/// equal up to a version on the same semver track.
fn same_interface(a: &str, b: &str) -> bool {
    a == b || matches!((track(a), track(b)), (Some(x), Some(y)) if x == y)
}

/// The name up to its compatibility track: `x:y/z@1` for `x:y/z@1.2.3`,
/// `x:y/z@0.2` for `x:y/z@0.2.3`; None for no version, a pre-release, a
/// `0.0.z` version or one that does not parse (they match only exactly).
fn track(name: &str) -> Option<(&str, u64, Option<u64>)> {
    let (base, version) = name.split_once('@')?;
    let version = version.split_once('+').map_or(version, |(v, _build)| v);
    if version.contains('-') {
        return None;
    }
    let mut parts = version.split('.').map(|p| {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u64>().ok())
            .flatten()
    });
    let (major, minor, _patch) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() {
        return None;
    }
    match (major, minor) {
        (0, 0) => None,
        (0, minor) => Some((base, 0, Some(minor))),
        (major, _) => Some((base, major, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(w: World) -> &'static WitWorld {
        WORLDS
            .iter()
            .find(|t| t.name == w.wit_name())
            .expect("every World is in wit/")
    }

    #[test]
    fn every_world_is_in_wit_and_named_by_its_export() {
        for (w, export) in [
            (World::Http, "wasi:http/incoming-handler@0.2.12"),
            (World::Command, "wasi:cli/run@0.2.12"),
        ] {
            let t = table(w);
            assert_eq!(t.exports, [export], "{w:?}");
            assert_eq!(t.id, format!("skiff:pods/{}@0.1.0", w.wit_name()));
        }
        for t in WORLDS {
            assert!(World::from_wit_name(t.name).is_some(), "{}", t.name);
        }
    }

    #[test]
    fn the_worlds_import_what_the_hosts_link() {
        let http = table(World::Http).imports;
        let command = table(World::Command).imports;
        for i in [
            "wasi:http/types@0.2.12",
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:filesystem/preopens@0.2.12",
            "wasi:cli/environment@0.2.12",
            "wasi:sockets/tcp@0.2.12",
        ] {
            assert!(http.contains(&i), "http-pod imports {i}");
        }
        assert!(command.contains(&"wasi:filesystem/types@0.2.12"));
        assert!(!command.iter().any(|i| i.starts_with("wasi:http/")));
        // Unstable interfaces are not part of the worlds.
        assert!(!http.iter().any(|i| i.starts_with("wasi:clocks/timezone")));
    }

    #[test]
    fn exports_pick_the_world() {
        let cases: &[(&[&str], Option<World>)] = &[
            (&["wasi:http/incoming-handler@0.2.0"], Some(World::Http)),
            (&["wasi:http/incoming-handler@0.2.12"], Some(World::Http)),
            (&["wasi:cli/run@0.2.3"], Some(World::Command)),
            // Both: served over HTTP, as before.
            (
                &["wasi:cli/run@0.2.0", "wasi:http/incoming-handler@0.2.0"],
                Some(World::Http),
            ),
            // Extra exports are allowed beside the world's.
            (
                &["my:app/admin", "wasi:cli/run@0.2.0"],
                Some(World::Command),
            ),
            (&[], None),
            (&["my:app/thing@1.0.0"], None),
            (&["wasi:http/incoming-handler@0.3.0"], None),
            (&["wasi:http/incoming-handler@0.2.0-rc-2023-11-10"], None),
            (&["wasi:http/incoming-handler"], None),
        ];
        for (exports, want) in cases {
            let got = check(std::iter::empty::<&str>(), exports.iter());
            assert_eq!(got.as_ref().ok(), want.as_ref(), "{exports:?}: {got:?}");
        }
    }

    #[test]
    fn imports_outside_the_world_are_named() {
        let http = ["wasi:http/incoming-handler@0.2.12"];
        let ok = check(
            [
                "wasi:io/streams@0.2.0",
                "wasi:http/types@0.2.4",
                "wasi:filesystem/types@0.2.0",
                "wasi:cli/environment@0.2.12",
            ],
            http,
        );
        assert_eq!(ok.ok(), Some(World::Http));
        let err = check(
            [
                "wasi:io/streams@0.2.0",
                "wasi:keyvalue/store@0.2.0-draft",
                "wasi:http/types@0.3.0",
            ],
            http,
        )
        .unwrap_err();
        match &err {
            WasmError::UnsupportedImport { import } => {
                assert_eq!(
                    import,
                    "wasi:keyvalue/store@0.2.0-draft, wasi:http/types@0.3.0"
                )
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(
            err.to_string(),
            "the component imports wasi:keyvalue/store@0.2.0-draft, wasi:http/types@0.3.0, \
             which this node does not provide"
        );
        // With no world's exports, an import no world provides is the error.
        let err = check(["wasi:teleport/beam@0.1.0"], std::iter::empty::<&str>());
        assert!(
            matches!(&err, Err(WasmError::UnsupportedImport { import }) if import == "wasi:teleport/beam@0.1.0"),
            "{err:?}"
        );
        let err = check(["wasi:http/types@0.2.0"], std::iter::empty::<&str>());
        assert!(
            matches!(&err, Err(WasmError::UnsupportedWorld { .. })),
            "{err:?}"
        );
        // A command has no wasi:http.
        let err = check(["wasi:http/outgoing-handler@0.2.0"], ["wasi:cli/run@0.2.0"]);
        assert!(
            matches!(&err, Err(WasmError::UnsupportedImport { import }) if import == "wasi:http/outgoing-handler@0.2.0"),
            "{err:?}"
        );
    }

    #[test]
    fn no_world_says_what_each_needs() {
        let err = check(std::iter::empty::<&str>(), ["my:app/thing"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the component fits none of the worlds this node hosts: it exports my:app/thing; \
             skiff:pods/http-pod@0.1.0 exports wasi:http/incoming-handler@0.2.12; \
             skiff:pods/command-pod@0.1.0 exports wasi:cli/run@0.2.12"
        );
    }

    #[test]
    fn version_tracks() {
        let cases: &[(&str, &str, bool)] = &[
            ("a:b/c@0.2.0", "a:b/c@0.2.12", true),
            ("a:b/c@0.2.20", "a:b/c@0.2.12", true),
            ("a:b/c@0.3.0", "a:b/c@0.2.12", false),
            ("a:b/c@1.0.0", "a:b/c@1.4.2", true),
            ("a:b/c@2.0.0", "a:b/c@1.4.2", false),
            ("a:b/c@0.0.1", "a:b/c@0.0.2", false),
            ("a:b/c@0.0.1", "a:b/c@0.0.1", true),
            ("a:b/c@0.2.0-rc", "a:b/c@0.2.0", false),
            ("a:b/c@0.2.0+build", "a:b/c@0.2.1", true),
            ("a:b/c", "a:b/c", true),
            ("a:b/c", "a:b/c@0.2.0", false),
            ("a:b/d@0.2.0", "a:b/c@0.2.0", false),
            ("a:b/c@0.2", "a:b/c@0.2.0", false),
            ("a:b/c@x.y.z", "a:b/c@0.2.0", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(same_interface(a, b), *want, "{a} vs {b}");
            assert_eq!(same_interface(b, a), *want, "{b} vs {a}");
        }
    }
}
