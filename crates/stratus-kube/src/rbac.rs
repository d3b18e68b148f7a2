//! What the operator may do in the cluster: the rules of its Role in the Helm chart, and no
//! more. The mocked API server of the tests refuses any request these do not allow, and a test
//! of the chart checks its Role grants exactly these, so the two cannot drift apart.
//! ([RBAC](https://kubernetes.io/docs/reference/access-authn-authz/rbac/); server-side apply is
//! authorized as `patch`, also when it creates.)

/// One rule of the operator's Role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, or `resource/subresource`.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

const fn allow(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> Permission {
    Permission {
        group,
        resource,
        verbs,
    }
}

/// Everything the operator does, in its own namespace.
pub const PERMISSIONS: &[Permission] = &[
    // Its own resources: watched, finalizers set, status written.
    allow(
        "stratus.dev",
        "databaseservices",
        &["get", "list", "watch", "patch"],
    ),
    allow("stratus.dev", "databaseservices/status", &["patch"]),
    // A database's objects (`objects`): the Secret is created once and read; the others applied.
    allow("", "secrets", &["get", "create", "delete"]),
    allow("", "configmaps", &["patch", "delete"]),
    allow("", "services", &["patch", "delete"]),
    allow("apps", "statefulsets", &["patch", "delete"]),
    allow("apps", "statefulsets/scale", &["patch"]),
    allow("", "pods", &["get"]),
    allow("", "pods/resize", &["patch"]),
    allow("", "persistentvolumeclaims", &["patch", "delete"]),
    // Leader election.
    allow(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update", "patch"],
    ),
];

/// Whether `verb` on `resource` of `group` is allowed.
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    PERMISSIONS
        .iter()
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb))
}

/// The group, resource (with `/subresource`) and RBAC verb of a request to the API server, for
/// namespaced paths (`/api/v1/namespaces/NS/…` and `/apis/GROUP/VERSION/namespaces/NS/…`).
pub fn request_of(method: &str, path: &str) -> Option<(String, String, &'static str)> {
    let path = path.split('?').next()?;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, "namespaces", _ns, rest @ ..] => ("", rest),
        ["apis", group, _version, "namespaces", _ns, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some((group.to_owned(), resource, verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_their_rbac_verbs() {
        let r = |m, p| request_of(m, p).map(|(g, r, v)| format!("{g} {r} {v}"));
        assert_eq!(
            r("GET", "/api/v1/namespaces/s/pods/db-x-0").as_deref(),
            Some(" pods get")
        );
        assert_eq!(
            r("PATCH", "/api/v1/namespaces/s/pods/db-x-0/resize?").as_deref(),
            Some(" pods/resize patch")
        );
        assert_eq!(
            r("POST", "/api/v1/namespaces/s/secrets?").as_deref(),
            Some(" secrets create")
        );
        assert_eq!(
            r(
                "PATCH",
                "/apis/apps/v1/namespaces/s/statefulsets/db-x/scale?"
            )
            .as_deref(),
            Some("apps statefulsets/scale patch")
        );
        assert_eq!(
            r(
                "GET",
                "/apis/stratus.dev/v1alpha1/namespaces/s/databaseservices"
            )
            .as_deref(),
            Some("stratus.dev databaseservices list")
        );
        assert_eq!(
            r("GET", "/api/v1/nodes"),
            None,
            "cluster-scoped: not the operator's"
        );
    }

    #[test]
    fn the_operator_cannot_touch_what_it_does_not_make() {
        assert!(allows("", "pods/resize", "patch"));
        assert!(
            !allows("", "pods", "delete"),
            "a crashed pod is the StatefulSet's to replace"
        );
        assert!(
            !allows("", "secrets", "list"),
            "other secrets of the namespace stay unread"
        );
        assert!(!allows("", "pods/exec", "create"));
        assert!(!allows("rbac.authorization.k8s.io", "roles", "patch"));
    }
}
