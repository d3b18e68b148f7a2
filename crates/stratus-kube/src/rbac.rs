//! What the operator may do in the cluster: the rules of its Role in the Helm chart, and no
//! more. The mocked API server of the tests refuses any request these do not allow, and a test
//! of the chart checks its Role grants exactly these, so the two cannot drift apart.
//! ([RBAC](https://kubernetes.io/docs/reference/access-authn-authz/rbac/). A server-side apply is
//! authorized as `patch`, and, when the object does not exist yet, also as `create`: the mock
//! requires both for every apply.)

/// One rule of the operator's Role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, or `resource/subresource`.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// Only these objects (`[]`: any). RBAC cannot limit `create` or `list` by name.
    pub names: &'static [&'static str],
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
        names: &[],
    }
}

const fn allow_named(
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    names: &'static [&'static str],
) -> Permission {
    Permission {
        group,
        resource,
        verbs,
        names,
    }
}

/// The operator's Lease.
pub const LEASE: &str = "stratus-operator";

/// Everything the operator does, in its own namespace.
pub const PERMISSIONS: &[Permission] = &[
    // Its own resources: watched, finalizers set, status written.
    allow(
        "stratus.dev",
        "databaseservices",
        &["get", "list", "watch", "patch"],
    ),
    allow("stratus.dev", "databaseservices/status", &["patch"]),
    // The policy of a database's idle suspend and park.
    allow("stratus.dev", "scalingpolicies", &["list"]),
    // Backup schedules: watched, status written; each backup is a Job it makes, watches and
    // deletes once recorded, and whose failed pod it reads for the reason.
    allow("stratus.dev", "backupschedules", &["get", "list", "watch"]),
    allow("stratus.dev", "backupschedules/status", &["patch"]),
    allow("batch", "jobs", &["create", "list", "watch", "delete"]),
    // A database's objects (`objects`): the Secret is created once, read, and patched only to
    // publish the accounts for the proxy (`accounts`); the owner's login Secret is created
    // once; the others applied (which creates them the first time).
    allow("", "secrets", &["get", "create", "patch", "delete"]),
    allow("", "configmaps", &["create", "patch", "delete"]),
    allow("", "services", &["create", "patch", "delete"]),
    // The warm pool's spares are listed by label, and relabelled (StatefulSet, pod, Secret)
    // when a database claims one (`instance`).
    allow(
        "apps",
        "statefulsets",
        &["get", "list", "create", "patch", "delete"],
    ),
    allow("apps", "statefulsets/scale", &["patch"]),
    allow("", "pods", &["get", "list", "patch"]),
    allow("", "pods/resize", &["patch"]),
    // Moving a database to another node: its pod is evicted (never deleted outright), and the
    // StatefulSet makes it again there.
    allow("", "pods/eviction", &["create"]),
    allow("", "persistentvolumeclaims", &["get", "patch", "delete"]),
    // Events about its resources (a repeated one is patched as a series).
    allow("events.k8s.io", "events", &["create", "patch"]),
    // Leader election: its own Lease only, once made.
    allow("coordination.k8s.io", "leases", &["create"]),
    allow_named(
        "coordination.k8s.io",
        "leases",
        &["get", "update", "patch"],
        &[LEASE],
    ),
];

/// Everything the proxy does ([`crate::directory`]), in the same namespace: read a database's
/// resource, pod and Secret (the published accounts, and Stratus's login to read them afresh),
/// patch the resource to wake it or to ask for its accounts to be published, and record Events
/// about what its sessions lived through. Nothing else: it makes nothing but Events, and
/// deletes and lists nothing.
pub const PROXY_PERMISSIONS: &[Permission] = &[
    allow("stratus.dev", "databaseservices", &["get", "patch"]),
    allow("", "pods", &["get"]),
    allow("", "secrets", &["get"]),
    // Events about what a database's sessions lived through (failovers, throttled logins).
    allow("events.k8s.io", "events", &["create", "patch"]),
];

/// Whether the operator may do `verb` on object `name` (`None` for a collection) of `resource`
/// in `group`.
pub fn allows(group: &str, resource: &str, verb: &str, name: Option<&str>) -> bool {
    allows_in(PERMISSIONS, group, resource, verb, name)
}

/// The same, for the rules `role`.
pub fn allows_in(
    role: &[Permission],
    group: &str,
    resource: &str,
    verb: &str,
    name: Option<&str>,
) -> bool {
    role.iter().any(|p| {
        p.group == group
            && p.resource == resource
            && p.verbs.contains(&verb)
            && (p.names.is_empty() || name.is_some_and(|n| p.names.contains(&n)))
    })
}

/// What a request to the API server asks, for RBAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub group: String,
    /// With `/subresource`.
    pub resource: String,
    pub name: Option<String>,
    pub verb: &'static str,
}

/// The RBAC view of a request, for namespaced paths (`/api/v1/namespaces/NS/…` and
/// `/apis/GROUP/VERSION/namespaces/NS/…`).
pub fn request_of(method: &str, path: &str) -> Option<Asked> {
    let path = path.split('?').next()?;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, "namespaces", _ns, rest @ ..] => ("", rest),
        ["apis", group, _version, "namespaces", _ns, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (resource, name) = match rest {
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(name.to_string())),
        [resource, name, sub] => (format!("{resource}/{sub}"), Some(name.to_string())),
        _ => return None,
    };
    let subresource = rest.len() == 3;
    let verb = match (method, name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", false) => "create",
        // A POST to an object's subresource (an eviction, an exec) creates that subresource.
        ("POST", true) if subresource => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(Asked {
        group: group.to_owned(),
        resource,
        name,
        verb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_their_rbac_verbs() {
        let r = |m, p| request_of(m, p).map(|a| format!("{} {} {}", a.group, a.resource, a.verb));
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
            r("POST", "/api/v1/namespaces/s/pods/db-x-0/eviction?").as_deref(),
            Some(" pods/eviction create")
        );
        assert_eq!(r("POST", "/api/v1/namespaces/s/pods/db-x-0"), None);
        assert_eq!(
            r("GET", "/api/v1/nodes"),
            None,
            "cluster-scoped: not the operator's"
        );
    }

    #[test]
    fn the_operator_cannot_touch_what_it_does_not_make() {
        assert!(allows("", "pods/resize", "patch", Some("db-x-0")));
        let pod = Some("db-x-0");
        assert!(
            !allows("", "pods", "delete", pod),
            "a crashed pod is the StatefulSet's"
        );
        assert!(
            !allows("", "secrets", "list", None),
            "no listing of the namespace's secrets"
        );
        assert!(!allows("", "pods/exec", "create", pod));
        assert!(allows("", "pods/eviction", "create", pod), "moves evict");
        assert!(!allows(
            "rbac.authorization.k8s.io",
            "roles",
            "patch",
            Some("x")
        ));
        assert!(allows(
            "coordination.k8s.io",
            "leases",
            "update",
            Some(LEASE)
        ));
        assert!(!allows(
            "coordination.k8s.io",
            "leases",
            "update",
            Some("kube-scheduler")
        ));
    }
}
