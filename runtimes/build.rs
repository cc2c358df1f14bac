//! Embeds the worlds Skiff hosts: resolves the top-level `wit/` directory with
//! `wit-parser` and writes `$OUT_DIR/worlds.rs`, a table with, for each world
//! of the main package (`skiff:pods`), the interfaces it imports and exports
//! (fully qualified, e.g. `wasi:http/types@0.2.12`). The agent checks
//! components against this table, so it never needs `wit/` at run time.
//!
//! A `wit/` that does not resolve, or a world that imports or exports
//! anything but whole interfaces, fails the build with the reason.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use wit_parser::{Resolve, WorldItem, WorldKey};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let wit = manifest.join("../wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    println!("cargo:rerun-if-changed={}", wit.join("deps").display());
    let table = match table(&wit) {
        Ok(t) => t,
        Err(e) => panic!("{}: {e:#}", wit.display()),
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("worlds.rs"), table).expect("write worlds.rs");
}

fn table(wit: &Path) -> anyhow::Result<String> {
    let mut resolve = Resolve::default();
    let (pkg, files) = resolve.push_dir(wit)?;
    for f in files.paths() {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let package = &resolve.packages[pkg];
    let mut out = String::new();
    writeln!(
        out,
        "/// The worlds of `{}`, generated from `wit/` by build.rs.",
        package.name
    )?;
    writeln!(out, "pub(crate) const WORLDS: &[WitWorld] = &[")?;
    for (name, &id) in &package.worlds {
        let world = &resolve.worlds[id];
        let names = |items: &wit_parser::IndexMap<WorldKey, WorldItem>| {
            items
                .iter()
                .map(|(key, item)| match (key, item) {
                    (WorldKey::Interface(i), WorldItem::Interface { .. }) => resolve
                        .id_of(*i)
                        .ok_or_else(|| anyhow::anyhow!("world {name}: an unnamed interface")),
                    _ => Err(anyhow::anyhow!(
                        "world {name}: `{}` is not a whole interface",
                        resolve.name_world_key(key)
                    )),
                })
                .collect::<anyhow::Result<Vec<String>>>()
        };
        let (imports, exports) = (names(&world.imports)?, names(&world.exports)?);
        writeln!(out, "    WitWorld {{")?;
        writeln!(out, "        name: {name:?},")?;
        writeln!(out, "        id: {:?},", resolve.id_of_name(pkg, name))?;
        writeln!(out, "        imports: &{imports:?},")?;
        writeln!(out, "        exports: &{exports:?},")?;
        writeln!(out, "    }},")?;
    }
    writeln!(out, "];")?;
    Ok(out)
}
