//! Which Ingresses Skiff's router serves, read alike by the API servers (for
//! the Ingress status) and every node's router: an Ingress whose class
//! (`spec.ingressClassName`, else the old `kubernetes.io/ingress.class`
//! annotation) is an IngressClass of Skiff's controller, or one with no
//! class while Skiff's class is the default.

use serde_json::Value;

/// `spec.controller` of Skiff's IngressClasses.
pub const CONTROLLER: &str = "skiff.dev/ingress-router";
/// The IngressClass made at start (the default).
pub const CLASS: &str = "skiff";
/// The annotation that marks the default IngressClass.
pub const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

fn str_at<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The class an Ingress names, if any.
pub fn class_of(ingress: &Value) -> Option<&str> {
    str_at(ingress, "/spec/ingressClassName").or_else(|| {
        str_at(
            ingress,
            "/metadata/annotations/kubernetes.io~1ingress.class",
        )
    })
}

/// Whether `ingress` is served by Skiff's router, given the IngressClasses.
pub fn served(ingress: &Value, classes: &[Value]) -> bool {
    let ours = |c: &&Value| str_at(c, "/spec/controller") == Some(CONTROLLER);
    match class_of(ingress) {
        Some(name) => classes
            .iter()
            .filter(ours)
            .any(|c| str_at(c, "/metadata/name") == Some(name)),
        None => classes.iter().filter(ours).any(|c| {
            str_at(
                c,
                &format!("/metadata/annotations/{}", DEFAULT_CLASS.replace('/', "~1")),
            ) == Some("true")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn served_by_class_or_default() {
        let ours = json!({"metadata": {"name": "skiff", "annotations": {DEFAULT_CLASS: "true"}},
            "spec": {"controller": CONTROLLER}});
        let other =
            json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}});
        let ing = |spec: Value, ann: Value| json!({"metadata": {"annotations": ann}, "spec": spec});
        let classes = [ours.clone(), other.clone()];
        assert!(served(
            &ing(json!({"ingressClassName": "skiff"}), json!({})),
            &classes
        ));
        assert!(!served(
            &ing(json!({"ingressClassName": "nginx"}), json!({})),
            &classes
        ));
        assert!(!served(
            &ing(json!({"ingressClassName": "absent"}), json!({})),
            &classes
        ));
        assert!(
            served(&ing(json!({}), json!({})), &classes),
            "no class: the default"
        );
        assert!(served(
            &ing(json!({}), json!({"kubernetes.io/ingress.class": "skiff"})),
            &classes
        ));
        let not_default =
            json!({"metadata": {"name": "skiff"}, "spec": {"controller": CONTROLLER}});
        assert!(!served(&ing(json!({}), json!({})), &[not_default, other]));
    }
}
