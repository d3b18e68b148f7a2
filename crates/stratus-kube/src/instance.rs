//! Whose objects are whose: the name under which one server's StatefulSet, Service, ConfigMap,
//! Secret, pod and volume claim exist, and the labels that tie them to a database.
//!
//! A database made from nothing runs as `db-<database>`. The warm pool
//! ([`crate::operator::pool`]) makes servers before any database asks for one, as
//! `spare-<id>`; a database that claims one keeps that name (Kubernetes objects cannot be
//! renamed) and is tied to it by relabelling: `stratus.dev/database` is set on the StatefulSet,
//! its pod and its Secret, and the database's `status.instance` records the name. Whatever
//! reads a pooled server for a database checks that label first, so a status that names
//! another database's server (edited by hand, or left from a claim lost in a race) reaches
//! nothing of it.
//!
//! Reference: [labels and selectors](https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/).

use crate::objects::DATABASE_LABEL;
use std::collections::BTreeMap;
use stratus_core::ServiceName;

/// The label that names a pooled server's objects; its StatefulSet selects its pod by it.
pub const INSTANCE_LABEL: &str = "stratus.dev/instance";
/// The label of a pooled server no database has claimed yet.
pub const SPARE_LABEL: &str = "stratus.dev/spare";
/// Selects the warm pool's unclaimed servers.
pub const SPARE_SELECTOR: &str = "stratus.dev/spare=true";

/// The objects of one server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instance {
    /// Made for this database: `db-<database>`.
    Own(ServiceName),
    /// Made by the warm pool, `spare-<id>`; `claimed`: the database that took it.
    Pooled {
        id: String,
        claimed: Option<ServiceName>,
    },
}

impl Instance {
    /// The objects made for `db` itself.
    pub fn of(db: &ServiceName) -> Self {
        Instance::Own(db.clone())
    }

    /// A new spare for the pool, with a random id.
    pub fn new_spare() -> Self {
        Instance::Pooled {
            id: stratus_core::random_hex(4),
            claimed: None,
        }
    }

    /// The pooled server named `name` (`spare-<id>`, as a StatefulSet, a Secret or a status
    /// names it); `None` for any other name.
    pub fn pooled(name: &str, claimed: Option<ServiceName>) -> Option<Self> {
        let id = name.strip_prefix("spare-")?;
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        (4..=32)
            .contains(&id.len())
            .then_some(())
            .filter(|()| id.bytes().all(hex))
            .map(|()| Instance::Pooled {
                id: id.to_owned(),
                claimed,
            })
    }

    /// The instance `db` runs as: the pooled server its status names, else its own objects.
    pub fn of_database(db: &ServiceName, status_instance: Option<&str>) -> Self {
        status_instance
            .and_then(|name| Self::pooled(name, Some(db.clone())))
            .unwrap_or_else(|| Self::of(db))
    }

    /// The same instance, claimed by `db`.
    pub fn claimed_by(&self, db: &ServiceName) -> Self {
        match self {
            Instance::Own(_) => Instance::Own(db.clone()),
            Instance::Pooled { id, .. } => Instance::Pooled {
                id: id.clone(),
                claimed: Some(db.clone()),
            },
        }
    }

    /// The name of its StatefulSet, Service, ConfigMap and Secret.
    pub fn name(&self) -> String {
        match self {
            Instance::Own(db) => format!("db-{db}"),
            Instance::Pooled { id, .. } => format!("spare-{id}"),
        }
    }

    /// Its one pod.
    pub fn pod(&self) -> String {
        format!("{}-0", self.name())
    }

    /// Its volume claim, as the StatefulSet's claim template names it.
    pub fn claim(&self) -> String {
        format!("data-{}-0", self.name())
    }

    /// The database it serves, if any.
    pub fn database(&self) -> Option<&ServiceName> {
        match self {
            Instance::Own(db) => Some(db),
            Instance::Pooled { claimed, .. } => claimed.as_ref(),
        }
    }

    pub fn is_pooled(&self) -> bool {
        matches!(self, Instance::Pooled { .. })
    }

    /// Labels of its objects and its pod. A database's own objects carry the labels they always
    /// did (a StatefulSet made by an earlier operator must apply unchanged); a pooled server's
    /// carry its name, and either its database or the spare label.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = app_labels();
        match self {
            Instance::Own(db) => {
                labels.insert(DATABASE_LABEL.into(), db.to_string());
            }
            Instance::Pooled { claimed, .. } => {
                labels.insert(INSTANCE_LABEL.into(), self.name());
                match claimed {
                    Some(db) => labels.insert(DATABASE_LABEL.into(), db.to_string()),
                    None => labels.insert(SPARE_LABEL.into(), "true".into()),
                };
            }
        }
        labels
    }

    /// Labels of its claim template, which cannot change once the StatefulSet exists: a pooled
    /// server's do not name the database that will claim it.
    pub fn claim_labels(&self) -> BTreeMap<String, String> {
        match self {
            Instance::Own(_) => self.labels(),
            Instance::Pooled { .. } => {
                let mut labels = app_labels();
                labels.insert(INSTANCE_LABEL.into(), self.name());
                labels
            }
        }
    }

    /// The selector of its StatefulSet and Service (it cannot change either): a pooled server's
    /// is its name, which a claim keeps.
    pub fn selector(&self) -> BTreeMap<String, String> {
        match self {
            Instance::Own(db) => BTreeMap::from([(DATABASE_LABEL.into(), db.to_string())]),
            Instance::Pooled { .. } => BTreeMap::from([(INSTANCE_LABEL.into(), self.name())]),
        }
    }

    /// The instance whose pod is named `pod` (`NAME-0`), for the database `db` it serves.
    pub fn of_pod(pod: &str, db: &ServiceName) -> Self {
        let name = pod.strip_suffix("-0").unwrap_or(pod);
        Self::pooled(name, Some(db.clone())).unwrap_or_else(|| Self::of(db))
    }
}

/// The labels every object of a database server carries.
fn app_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "mariadb".into()),
        ("app.kubernetes.io/component".into(), "database".into()),
        ("app.kubernetes.io/managed-by".into(), "stratus".into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(name: &str) -> ServiceName {
        ServiceName::parse(name).unwrap()
    }

    #[test]
    fn a_database_made_from_nothing_keeps_the_names_and_labels_it_always_had() {
        let own = Instance::of(&db("shop"));
        assert_eq!(
            (own.name(), own.pod(), own.claim()),
            (
                "db-shop".into(),
                "db-shop-0".into(),
                "data-db-shop-0".into()
            )
        );
        assert_eq!(
            own.selector(),
            BTreeMap::from([(DATABASE_LABEL.into(), "shop".into())])
        );
        assert_eq!(own.labels(), own.claim_labels());
        assert!(!own.labels().contains_key(INSTANCE_LABEL));
    }

    #[test]
    fn a_spare_is_selected_by_its_own_name_and_a_claim_only_relabels_it() {
        let spare = Instance::pooled("spare-1a2b3c4d", None).unwrap();
        let claimed = spare.claimed_by(&db("shop"));
        assert_eq!(spare.name(), claimed.name());
        assert_eq!(spare.selector(), claimed.selector());
        assert_eq!(spare.claim_labels(), claimed.claim_labels());
        assert_eq!(spare.labels()[SPARE_LABEL], "true");
        assert_eq!(claimed.labels()[DATABASE_LABEL], "shop");
        assert!(!claimed.labels().contains_key(SPARE_LABEL));
        assert_eq!(claimed.claim(), "data-spare-1a2b3c4d-0");
    }

    #[test]
    fn only_the_pools_own_names_are_taken_from_a_status() {
        let shop = db("shop");
        for hostile in [
            "db-other",
            "spare-",
            "spare-XYZ",
            "spare-1a2b/../x",
            "spare-12",
            "other",
            "",
        ] {
            assert_eq!(
                Instance::of_database(&shop, Some(hostile)),
                Instance::of(&shop),
                "{hostile:?}"
            );
        }
        assert_eq!(
            Instance::of_database(&shop, Some("spare-00ff")).name(),
            "spare-00ff"
        );
        assert_eq!(Instance::of_pod("spare-00ff-0", &shop).name(), "spare-00ff");
        assert_eq!(Instance::of_pod("db-shop-0", &shop), Instance::of(&shop));
        let fresh = Instance::new_spare();
        assert_eq!(Instance::pooled(&fresh.name(), None), Some(fresh));
    }
}
