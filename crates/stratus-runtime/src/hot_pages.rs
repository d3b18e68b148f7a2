//! The hot indexes of a server about to be suspended, and how to read them back after the wake.
//!
//! MariaDB's own reload of the buffer pool (`innodb_buffer_pool_load_now`,
//! <https://mariadb.com/kb/en/innodb-buffer-pool/#dumping-and-restoring-the-buffer-pool>)
//! passes over every page of an encrypted tablespace (`buf_load` in
//! `storage/innobase/buf/buf0dump.cc` skips any space whose encryption is on), and Stratus
//! encrypts every database at rest: the reload reports "completed" having read nothing. So before
//! the pool shrinks, Stratus notes which indexes fill it
//! (<https://mariadb.com/kb/en/information-schema-innodb_buffer_page-table/>) and how large each
//! is (`mysql.innodb_index_stats`, <https://mariadb.com/kb/en/innodb-persistent-statistics/>);
//! after the wake it reads the mostly-hot ones whole with an index scan, and `ANALYZE
//! FORMAT=JSON` reports the pages that took (`r_engine_stats`,
//! <https://mariadb.com/kb/en/analyze-format-json/>).

use stratus_core::sql::quote_ident;

/// One index with pages in the buffer pool, in an encrypted tablespace of its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HotIndex {
    pub table: TableName,
    /// `PRIMARY` (or `GEN_CLUST_INDEX`) for the clustered index, which holds the rows.
    pub index: String,
    /// Its pages in the buffer pool.
    pub hot_pages: u64,
    /// Its size in pages: from the persistent statistics, else its table's whole file.
    pub size_pages: u64,
}

/// A table (or one partition of it) as InnoDB names it in `INNODB_BUFFER_PAGE_LRU.TABLE_NAME`:
/// `` `db`.`t` `` or `` `db`.`t` /* Partition `p0` */ ``.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableName {
    pub schema: String,
    pub table: String,
    pub partition: Option<String>,
}

impl TableName {
    /// Reads InnoDB's quoted form. Names come from a tenant's server, so anything else (a
    /// subpartition, a system table, a form this does not know) is `None`, never guessed at.
    pub fn parse(s: &str) -> Option<Self> {
        let (schema, rest) = quoted(s)?;
        let (table, rest) = quoted(rest.strip_prefix('.')?)?;
        let partition = match rest {
            "" => None,
            _ => {
                let (p, rest) = quoted(rest.strip_prefix(" /* Partition ")?)?;
                if rest != " */" {
                    return None;
                }
                Some(p)
            }
        };
        Some(Self {
            schema,
            table,
            partition,
        })
    }

    /// The table as SQL names it, with the partition clause where there is one.
    pub fn sql(&self) -> String {
        let mut s = format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table));
        if let Some(p) = &self.partition {
            s.push_str(&format!(" PARTITION ({})", quote_ident(p)));
        }
        s
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)?;
        if let Some(p) = &self.partition {
            write!(f, " (partition {p})")?;
        }
        Ok(())
    }
}

/// A backtick-quoted identifier at the start of `s` (doubled backticks inside), and the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut rest = s.strip_prefix('`')?;
    let mut out = String::new();
    loop {
        let end = rest.find('`')?;
        out.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('`') {
            Some(more) => {
                out.push('`');
                rest = more;
            }
            None => return Some((out, rest)),
        }
    }
}

/// Per index of a tenant's table in an encrypted file-per-table tablespace: its quoted table
/// name, index name, pages in the pool, and size in pages; the 1,000 hottest, so a tenant with
/// many tables costs Stratus a bounded list per suspended database. It runs once, on an idle
/// server being suspended. `INNODB_BUFFER_PAGE_LRU` lists the pages that hold data; the
/// server materializes an information_schema table whole, with its wide name columns, and
/// `INNODB_BUFFER_PAGE` lists free pages too: a new database's 1 GiB pool was 65,536 rows,
/// and the 20 MiB of memory the server touched for them stayed in its RSS while suspended. A
/// full pool still lists one row per page, so that saving is for new and small databases.
pub const HOT_INDEXES: &str = "SELECT h.TABLE_NAME, h.INDEX_NAME, h.hot, \
     CAST(COALESCE(s.stat_value, ts.FILE_SIZE DIV ts.PAGE_SIZE) AS UNSIGNED) \
     FROM (SELECT SPACE, TABLE_NAME, INDEX_NAME, COUNT(*) AS hot \
           FROM information_schema.INNODB_BUFFER_PAGE_LRU \
           WHERE PAGE_TYPE = 'INDEX' AND TABLE_NAME LIKE '`%`.`%' \
           AND TABLE_NAME NOT LIKE '`mysql`.%' \
           GROUP BY SPACE, TABLE_NAME, INDEX_NAME) h \
     JOIN information_schema.INNODB_TABLESPACES_ENCRYPTION e \
       ON e.SPACE = h.SPACE AND e.ENCRYPTION_SCHEME <> 0 \
     JOIN information_schema.INNODB_SYS_TABLESPACES ts ON ts.SPACE = h.SPACE AND ts.SPACE <> 0 \
     LEFT JOIN mysql.innodb_index_stats s \
       ON CONCAT(s.database_name, '/', s.table_name) = ts.NAME \
       AND s.index_name = h.INDEX_NAME AND s.stat_name = 'size' \
     ORDER BY h.hot DESC LIMIT 1000";

/// Rows of [`HOT_INDEXES`] as hot indexes; those whose name does not parse are left out.
pub fn hot_indexes(rows: Vec<(String, String, u64, Option<u64>)>) -> Vec<HotIndex> {
    rows.into_iter()
        .filter_map(|(table, index, hot_pages, size)| {
            Some(HotIndex {
                table: TableName::parse(&table)?,
                index,
                hot_pages,
                size_pages: size.unwrap_or(hot_pages).max(hot_pages),
            })
        })
        .collect()
}

/// The statement that reads one index whole: a count over it, which visits every leaf page
/// (the clustered index by a table scan). Bounded: it gives up after `limit_secs`, and does not
/// wait for a tenant's DDL to let go of the table.
pub fn warm_statement(index: &HotIndex, limit_secs: u64) -> String {
    let hint = if is_clustered(&index.index) {
        "USE INDEX ()".to_owned()
    } else {
        format!("FORCE INDEX ({})", quote_ident(&index.index))
    };
    format!(
        "SET STATEMENT max_statement_time = {limit_secs}, lock_wait_timeout = 1 FOR \
         ANALYZE FORMAT=JSON SELECT COUNT(*) FROM {} {hint}",
        index.table.sql()
    )
}

fn is_clustered(index: &str) -> bool {
    index == "PRIMARY" || index == "GEN_CLUST_INDEX"
}

/// What reading an index back cost, from `ANALYZE`'s `r_engine_stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Pages looked up in the buffer pool (`Innodb_buffer_pool_read_requests`).
    pub pages_accessed: u64,
    /// Pages read while the statement waited (`Innodb_buffer_pool_reads`).
    pub pages_read: u64,
    /// Pages read ahead of the scan (`Innodb_buffer_pool_read_ahead`).
    pub pages_prefetched: u64,
}

impl Warmed {
    /// Sums every `r_engine_stats` object in an `ANALYZE FORMAT=JSON` answer; MariaDB leaves
    /// out the counters that are zero.
    pub fn from_analyze(json: &str) -> Option<Self> {
        fn walk(v: &serde_json::Value, w: &mut Warmed) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        if k == "r_engine_stats" {
                            let n = |key: &str| v.get(key).and_then(|x| x.as_u64()).unwrap_or(0);
                            w.pages_accessed += n("pages_accessed");
                            w.pages_read += n("pages_read_count");
                            w.pages_prefetched += n("pages_prefetch_read_count");
                        } else {
                            walk(v, w);
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, w)),
                _ => {}
            }
        }
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        let mut w = Warmed::default();
        walk(&v, &mut w);
        Some(w)
    }

    pub fn add(&mut self, o: Warmed) {
        self.pages_accessed += o.pages_accessed;
        self.pages_read += o.pages_read;
        self.pages_prefetched += o.pages_prefetched;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn innodb_table_names_parse_strictly() {
        let t = TableName::parse("`shop`.`orders`").unwrap();
        assert_eq!((t.schema.as_str(), t.table.as_str()), ("shop", "orders"));
        assert_eq!(t.partition, None);
        let t = TableName::parse("`we``ird`.`a.b` /* Partition `p0` */").unwrap();
        assert_eq!(t.schema, "we`ird");
        assert_eq!(t.table, "a.b");
        assert_eq!(t.partition.as_deref(), Some("p0"));
        for bad in [
            "`SYS_FOREIGN`",
            "shop.orders",
            "`shop`.`orders",
            "`shop`.`orders` extra",
            "`shop`.`t` /* Partition `p0` */ ; DROP TABLE x",
            "`shop`.`t` /* Subpartition `s0` */",
            "",
        ] {
            assert_eq!(TableName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostile_names_stay_identifiers() {
        // A partition named to close the comment InnoDB wraps it in, and a table to end the
        // statement: both come back as identifiers, quoted again.
        let t = TableName::parse("`a``; DROP DATABASE x; --`.`t*/` /* Partition `x*/ OR 1` */")
            .unwrap();
        assert_eq!(t.schema, "a`; DROP DATABASE x; --");
        assert_eq!(t.partition.as_deref(), Some("x*/ OR 1"));
        let idx = HotIndex {
            table: t,
            index: "k`) UNION SELECT 1 -- ".into(),
            hot_pages: 1,
            size_pages: 1,
        };
        assert_eq!(
            warm_statement(&idx, 5),
            "SET STATEMENT max_statement_time = 5, lock_wait_timeout = 1 FOR ANALYZE FORMAT=JSON \
             SELECT COUNT(*) FROM `a``; DROP DATABASE x; --`.`t*/` PARTITION (`x*/ OR 1`) \
             FORCE INDEX (`k``) UNION SELECT 1 -- `)"
        );
    }

    #[test]
    fn the_clustered_index_is_read_by_a_table_scan() {
        let idx = |index: &str| HotIndex {
            table: TableName::parse("`d`.`t`").unwrap(),
            index: index.into(),
            hot_pages: 1,
            size_pages: 1,
        };
        assert!(warm_statement(&idx("PRIMARY"), 5).ends_with("FROM `d`.`t` USE INDEX ()"));
        assert!(warm_statement(&idx("GEN_CLUST_INDEX"), 5).ends_with("USE INDEX ()"));
        assert!(warm_statement(&idx("k"), 5).ends_with("FORCE INDEX (`k`)"));
    }

    #[test]
    fn rows_without_a_size_count_their_hot_pages() {
        let got = hot_indexes(vec![
            ("`d`.`t`".into(), "PRIMARY".into(), 10, Some(40)),
            ("`d`.`u`".into(), "PRIMARY".into(), 10, None),
            ("`d`.`v`".into(), "PRIMARY".into(), 10, Some(3)),
            ("`SYS_X`".into(), "CLUST_IND".into(), 10, Some(3)),
        ]);
        let sizes: Vec<u64> = got.iter().map(|h| h.size_pages).collect();
        assert_eq!(sizes, [40, 10, 10]);
    }

    #[test]
    fn analyze_counters_add_up_and_default_to_zero() {
        let json = r#"{"query_block": {"nested_loop": [
            {"table": {"r_engine_stats": {"pages_accessed": 945, "pages_read_count": 97,
                                          "pages_prefetch_read_count": 896}}},
            {"table": {"r_engine_stats": {"pages_accessed": 10}}}]}}"#;
        assert_eq!(
            Warmed::from_analyze(json),
            Some(Warmed {
                pages_accessed: 955,
                pages_read: 97,
                pages_prefetched: 896
            })
        );
        assert_eq!(Warmed::from_analyze("not json"), None);
    }
}
