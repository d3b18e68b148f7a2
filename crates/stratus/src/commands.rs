//! The CLI verbs: each one API call, printed as text or (with `--json`) as the API's JSON.

use crate::cli::{
    BackupCommand, Command, DbCommand, EventsArgs, Global, KeyCommand, NodeCommand, TokenCommand,
    UsageArgs, UserCommand,
};
use crate::config::api_url;
use crate::output::{bytes, move_progress, table, with_progress, with_spinner};
use crate::up::ADMIN_TOKEN_FILE;
use anyhow::{Context, bail};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use stratus_api::ApiClient;
use stratus_api::types::{
    BackupRequest, BranchRequest, CreateRequest, CreateTokenRequest, CreateUserRequest,
    DatabaseView, EventView, RestoreRequest,
};

pub async fn run(global: &Global, command: Command) -> anyhow::Result<()> {
    let api = client(global)?;
    let json = global.json;
    match command {
        Command::Up(_) | Command::Operator(_) => unreachable!("handled by main"),
        Command::Db(cmd) => db(&api, json, cmd).await,
        Command::User(cmd) => user(&api, json, cmd).await,
        Command::Backup(cmd) => backup(&api, json, cmd).await,
        Command::Events(args) => events(&api, json, args).await,
        Command::Usage(args) => usage(&api, json, args).await,
        Command::Connect { name, user } => {
            let d = api.show(&name).await?;
            crate::connect::exec(&d.name, &d.database, &user, &d.host, d.port, d.require_tls)
        }
        Command::Token(cmd) => tokens(&api, json, cmd).await,
        Command::Key(KeyCommand::Rotate) => {
            let r = api.rotate_keys().await?;
            if json {
                return print_json(&r);
            }
            println!(
                "Master key replaced; {} database key(s) wrapped again.",
                r.wrapped
            );
            if let Some(e) = r.encryption {
                println!("  {e}");
            }
            Ok(())
        }
        Command::Node(NodeCommand::List) => {
            let nodes = api.nodes().await?;
            if json {
                return print_json(&nodes);
            }
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        format!(
                            "{} of {} vCPU",
                            n.allocated_cpu_millis as f64 / 1000.0,
                            n.cpu_millis as f64 / 1000.0
                        ),
                        format!(
                            "{} of {}",
                            bytes(n.allocated_memory_bytes),
                            bytes(n.memory_bytes)
                        ),
                        format!("{} ({} %)", bytes(n.memory_used_bytes), n.memory_used_pct),
                        format!("{} ({} %)", bytes(n.memory_load_bytes), n.memory_load_pct),
                        n.databases.len().to_string(),
                        n.storage.clone(),
                    ]
                })
                .collect();
            table(
                &[
                    "NODE",
                    "CPU ALLOCATED",
                    "MEMORY ALLOCATED",
                    "MEMORY USED",
                    "LOAD",
                    "DATABASES",
                    "DATA",
                ],
                &rows,
            );
            Ok(())
        }
        Command::Status => {
            let s = api.status().await?;
            if json {
                return print_json(&s);
            }
            println!(
                "Stratus {} up {}s, API {}",
                s.version, s.uptime_seconds, s.api
            );
            println!("data directory:   {}", s.data_dir);
            println!(
                "runtime:          {} (MariaDB {})",
                s.runtime, s.mariadb_version
            );
            match &s.resource_control_note {
                None => println!("resource control: {}", s.resource_control),
                Some(why) => println!("resource control: none: {why}"),
            }
            match &s.storage_note {
                None => println!("storage:          {}", s.storage),
                Some(why) => println!(
                    "storage:          {}: size limits kept by measuring ({why})",
                    s.storage
                ),
            }
            println!(
                "encryption:       {}",
                s.encryption
                    .as_deref()
                    .unwrap_or("off: data is not encrypted at rest")
            );
            let states: Vec<String> = s
                .databases_by_state
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            let p = &s.warm_pool;
            println!(
                "warm pool:        {} ready ({} presized), {} starting (target {}, {}–{})",
                p.ready, p.presized, p.starting, p.target, p.min, p.max
            );
            println!(
                "databases:        {}{}",
                s.databases,
                if states.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", states.join(", "))
                }
            );
            Ok(())
        }
    }
}

/// The API client: the URL from `--api`, the token from `--token` / `STRATUS_TOKEN` or else
/// `admin.token` in the data directory, and for `https://` the certificate from `--ca` or else
/// the data directory's `tls/cert.pem`.
fn client(global: &Global) -> anyhow::Result<ApiClient> {
    let url = api_url(global.api.as_deref());
    let data_dir = global
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("stratus-data"));
    let token = match global.token.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => read_token_file(&data_dir.join(ADMIN_TOKEN_FILE))?,
    };
    let ca = match &global.ca {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        // The CA of the pair `stratus up` makes, or (a pair of the user's) its chain.
        None if url.starts_with("https://") => {
            let tls = data_dir.join("tls");
            std::fs::read(tls.join(stratus_proxy::tls::CA_FILE))
                .or_else(|_| std::fs::read(tls.join("cert.pem")))
                .ok()
        }
        None => None,
    };
    Ok(ApiClient::with_auth(&url, Some(token), ca.as_deref())?)
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => bail!(
            "{} is empty; pass --token or set STRATUS_TOKEN",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no API token: pass --token or set STRATUS_TOKEN (also looked for {}; --data-dir or STRATUS_DATA_DIR name `stratus up`'s data directory)",
            path.display()
        ),
        Err(e) => bail!("cannot read the API token in {}: {e}", path.display()),
    }
}

async fn tokens(api: &ApiClient, json: bool, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            role,
            databases,
            name,
        } => {
            let t = api
                .create_token(&CreateTokenRequest {
                    role,
                    databases,
                    name,
                })
                .await?;
            if json {
                return print_json(&t);
            }
            println!(
                "Created {} token {} for {}.",
                t.token.role,
                t.token.id,
                t.token.databases.join(", ")
            );
            println!("  {}", t.secret);
            println!("The token is shown only now; Stratus keeps only its hash.");
            Ok(())
        }
        TokenCommand::List => {
            let all = api.tokens().await?;
            if json {
                return print_json(&all);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.role.clone(),
                        t.databases.join(","),
                        t.name.clone(),
                        t.created_at.clone(),
                    ]
                })
                .collect();
            table(&["ID", "ROLE", "DATABASES", "NAME", "CREATED"], &rows);
            Ok(())
        }
        TokenCommand::Delete { id } => {
            api.delete_token(&id).await?;
            if json {
                return print_json(&serde_json::json!({"id": id, "deleted": true}));
            }
            println!("Deleted token {id}.");
            Ok(())
        }
    }
}

async fn usage(api: &ApiClient, json: bool, args: UsageArgs) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(|s| since_ms(s, stratus_core::time::now_ms()))
        .transpose()?;
    let used = api.usage(args.db.as_deref(), since).await?;
    if json {
        return print_json(&used);
    }
    if used.is_empty() {
        println!(
            "No usage recorded{}.",
            args.db.map(|d| format!(" for {d}")).unwrap_or_default()
        );
        return Ok(());
    }
    let hours = |s: f64| format!("{:.2} h", s / 3600.0);
    let rows: Vec<Vec<String>> = used
        .iter()
        .map(|u| {
            vec![
                u.db.clone(),
                stratus_core::time::rfc3339(u.from_ms),
                hours(u.active_seconds),
                format!("{:.0}", u.scu_seconds),
                hours(u.suspended_seconds),
                hours(u.parked_seconds),
                format!("{:.3}", u.storage_gib_hours),
            ]
        })
        .collect();
    table(
        &[
            "DATABASE",
            "SINCE",
            "ACTIVE",
            "SCU-SECONDS",
            "SUSPENDED",
            "PARKED",
            "STORAGE GiB-h",
        ],
        &rows,
    );
    Ok(())
}

/// `--since`: RFC 3339, or a span back from `now_ms` (`90s`, `30m`, `24h`, `7d`).
fn since_ms(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Some(unit) = text.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => 0,
        };
        if let Ok(n) = text[..text.len() - 1].parse::<i64>()
            && secs > 0
            && n >= 0
        {
            return Ok(now_ms - n.saturating_mul(secs * 1000));
        }
    }
    stratus_core::time::parse_rfc3339_us(text)
        .map(|us| us / 1000)
        .map_err(|e| {
            anyhow::anyhow!(
                "--since {text:?}: not a time (RFC 3339) or a span like 30m, 24h, 7d: {e}"
            )
        })
}

/// `db show --watch`: the database again every `interval` seconds until interrupted. On a
/// terminal the screen is redrawn in place; otherwise (and with `--json`, one object per line)
/// each refresh follows the last. A refresh the API refuses is shown and the watch goes on.
async fn watch(api: &ApiClient, json: bool, name: &str, interval: f64) -> anyhow::Result<()> {
    if !(0.1..=3600.0).contains(&interval) {
        bail!("--interval must be between 0.1 and 3600 seconds, not {interval}");
    }
    let redraw = std::io::stdout().is_terminal() && !json;
    let every = std::time::Duration::from_secs_f64(interval);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let bound = every.max(std::time::Duration::from_secs(10));
        let shown: anyhow::Result<DatabaseView> =
            match tokio::time::timeout(bound, api.show(name)).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(anyhow::anyhow!("the API gave no answer within {bound:?}")),
            };
        if redraw {
            // Home and clear, as `watch` and `top` do.
            print!("\x1b[H\x1b[2J");
            println!(
                "{name}, every {interval} s ({}); Ctrl-C to stop\n",
                stratus_core::time::rfc3339(stratus_core::time::now_ms())
            );
        }
        match shown {
            Ok(d) if json => println!("{}", serde_json::to_string(&d)?),
            Ok(d) => show(&d, false)?,
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

/// Writes a credential file after its password was shown; a failure is a warning, since what
/// was created stands.
fn save_or_warn(c: &crate::connect::Credentials<'_>, then: &str, json: bool) {
    match crate::connect::save(c) {
        Ok(file) if !json => println!("Saved to {} (mode 0600): {then}", file.display()),
        Ok(_) => {}
        Err(e) => eprintln!("warning: credentials not saved: {e:#}"),
    }
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn db(api: &ApiClient, json: bool, cmd: DbCommand) -> anyhow::Result<()> {
    match cmd {
        DbCommand::Create {
            name,
            tier,
            min_scu,
            max_scu,
            storage_gb,
            user,
            password,
            require_tls,
            save_credentials,
        } => {
            let req = CreateRequest {
                name: name.clone(),
                tier,
                min_scu,
                max_scu,
                storage_gb,
                user,
                password,
                require_tls: require_tls.then_some(true),
            };
            let c = with_spinner(format!("creating {name}"), api.create(&req)).await?;
            // Shown before anything else can fail: the password exists nowhere else.
            if json {
                print_json(&c)?;
            } else {
                println!("Created {} in {} ms.", c.name, c.ready_ms);
                println!("  {}", c.connection_string);
                println!(
                    "  mariadb -h {} -P {} -u {} -p{} {}",
                    c.host,
                    c.port,
                    c.user,
                    shell_quote(&c.password),
                    c.database
                );
                println!("The password is shown only now; Stratus keeps only its hash.");
            }
            if save_credentials {
                save_or_warn(
                    &crate::connect::Credentials {
                        service: &c.name,
                        schema: &c.database,
                        user: &c.user,
                        password: &c.password,
                        host: &c.host,
                        port: c.port,
                    },
                    &format!("stratus connect {name}"),
                    json,
                );
            }
            Ok(())
        }
        DbCommand::List => {
            let all = api.list().await?;
            if json {
                return print_json(&all);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.state.clone(),
                        d.tier.clone(),
                        format!("{} ({}–{})", d.scu, d.min_scu, d.max_scu),
                        format!("{} vCPU", d.cpu_limit),
                        bytes(d.memory_limit),
                        format!("{}:{}", d.host, d.port),
                    ]
                })
                .collect();
            table(
                &["NAME", "STATE", "TIER", "SCU", "CPU", "MEMORY", "ENDPOINT"],
                &rows,
            );
            Ok(())
        }
        DbCommand::Show {
            name, watch: false, ..
        } => show(&api.show(&name).await?, json),
        DbCommand::Show { name, interval, .. } => watch(api, json, &name, interval).await,
        DbCommand::Delete { name, yes } => {
            if !yes {
                if !std::io::stdin().is_terminal() {
                    bail!("deleting {name} destroys its data; pass --yes to confirm");
                }
                eprint!("Delete database {name} and all its data? Type its name to confirm: ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim() != name {
                    bail!("not confirmed; nothing deleted");
                }
            }
            with_spinner(format!("deleting {name}"), api.delete(&name)).await?;
            if json {
                return print_json(&serde_json::json!({"name": name, "state": "deleted"}));
            }
            println!("Deleted {name}.");
            Ok(())
        }
        DbCommand::Scale { name, scu } => {
            let d = with_spinner(
                format!("scaling {name} to {scu} SCU"),
                api.scale(&name, scu),
            )
            .await?;
            show(&d, json)
        }
        DbCommand::Park { name, force } => {
            let d = with_spinner(format!("parking {name}"), api.park(&name, force)).await?;
            show(&d, json)
        }
        DbCommand::Suspend { name, force } => {
            let d = with_spinner(format!("suspending {name}"), api.suspend(&name, force)).await?;
            show(&d, json)
        }
        DbCommand::Resume { name } => {
            let d = with_spinner(format!("resuming {name}"), api.resume(&name)).await?;
            show(&d, json)
        }
        DbCommand::Migrate { name, to } => {
            let req = stratus_control::migrate::MigrateRequest { to };
            let r = with_progress(
                format!("migrating {name}"),
                api.migrate(&name, &req),
                || async {
                    let p = api.show(&name).await.ok()?.moving?;
                    let now = stratus_core::time::now_ms();
                    Some(format!("migrating {name} {}", move_progress(&p, now)))
                },
            )
            .await?;
            if json {
                return print_json(&r);
            }
            println!(
                "{} moved from node {} to node {} in {:.1} s ({})",
                r.database,
                r.from,
                r.to,
                r.total_ms as f64 / 1000.0,
                r.placement
            );
            println!("  copy:      {} ms ({})", r.copy_ms, bytes(r.copied_bytes));
            println!("  catch-up:  {} ms", r.catch_up_ms);
            println!(
                "  cut-over:  clients paused {} ms (lag at the cut-over {} ms)",
                r.pause_ms, r.lag_ms
            );
            Ok(())
        }
        DbCommand::Branch { source, new, time } => {
            let req = BranchRequest {
                to: new.clone(),
                time,
            };
            let d = with_spinner(
                format!("branching {source} into {new}"),
                api.branch(&source, &req),
            )
            .await?;
            show(&d, json)
        }
        DbCommand::Restore {
            source,
            to,
            backup,
            time,
        } => {
            let req = RestoreRequest {
                to: to.clone(),
                backup,
                time,
            };
            let d = with_spinner(
                format!("restoring {source} into {to}"),
                api.restore(&source, &req),
            )
            .await?;
            show(&d, json)
        }
    }
}

async fn backup(api: &ApiClient, json: bool, cmd: BackupCommand) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Create { db, incremental } => {
            let req = BackupRequest { incremental };
            let b = with_spinner(format!("backing up {db}"), api.create_backup(&db, &req)).await?;
            if json {
                return print_json(&b);
            }
            if !b.verified {
                bail!(
                    "backup {} was taken but failed verification: {}",
                    b.id,
                    b.verification
                );
            }
            println!(
                "Backup {} of {} taken and verified ({}{}).",
                b.id,
                b.database,
                bytes(b.bytes),
                b.base
                    .as_deref()
                    .map(|base| format!(", incremental on top of {base}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        BackupCommand::List { db } => {
            let all = api.backups(&db).await?;
            if json {
                return print_json(&all);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|b| {
                    vec![
                        b.id.clone(),
                        b.kind.clone(),
                        b.finished_at.clone(),
                        bytes(b.bytes),
                        if b.verified {
                            "verified".into()
                        } else {
                            format!("FAILED: {}", b.verification)
                        },
                    ]
                })
                .collect();
            table(&["ID", "KIND", "TAKEN", "SIZE", "VERIFICATION"], &rows);
            Ok(())
        }
        BackupCommand::Schedule {
            db,
            cron,
            retention_days,
            keep_last,
            incremental_cron,
        } => {
            let mut schedule = api.backup_schedule(&db).await?;
            if cron.is_some()
                || retention_days.is_some()
                || keep_last.is_some()
                || incremental_cron.is_some()
            {
                schedule.cron = cron.unwrap_or(schedule.cron);
                schedule.incremental_cron = incremental_cron.unwrap_or(schedule.incremental_cron);
                schedule.retention_days = retention_days.unwrap_or(schedule.retention_days);
                schedule.keep_last = keep_last.unwrap_or(schedule.keep_last);
                schedule = api.set_backup_schedule(&db, &schedule).await?;
            }
            if json {
                return print_json(&schedule);
            }
            match schedule.cron.as_str() {
                "" => println!("{db}: scheduled backups off"),
                c => println!("{db}: backups at \"{c}\" (UTC)"),
            }
            if !schedule.incremental_cron.is_empty() {
                println!(
                    "  incremental backups at \"{}\" (UTC)",
                    schedule.incremental_cron
                );
            }
            println!(
                "  kept {} days{}; the newest verified backup always stays",
                schedule.retention_days,
                if schedule.keep_last > 0 {
                    format!(", at most {}", schedule.keep_last)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        BackupCommand::Verify { id } => {
            let b = api.verify_backup(&id).await?;
            if json {
                return print_json(&b);
            }
            if !b.verified {
                bail!("backup {id} failed verification: {}", b.verification);
            }
            println!("Backup {id} verified: {}.", b.verification);
            Ok(())
        }
        BackupCommand::Delete { id } => {
            api.delete_backup(&id).await?;
            if json {
                return print_json(&serde_json::json!({"id": id, "deleted": true}));
            }
            println!("Deleted backup {id}.");
            Ok(())
        }
    }
}

fn show(d: &DatabaseView, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(d);
    }
    let enforced = if d.limits_enforced {
        ""
    } else {
        " (not enforced: no resource control)"
    };
    println!("name:         {}", d.name);
    println!("state:        {}", d.state);
    println!(
        "tier:         {} ({}–{} SCU, {} GB storage)",
        d.tier, d.min_scu, d.max_scu, d.storage_gb
    );
    println!(
        "size:         {} SCU: {} vCPU, {} memory{enforced}",
        d.scu,
        d.cpu_limit,
        bytes(d.memory_limit)
    );
    println!("buffer pool:  {}", bytes(d.buffer_pool_size));
    println!(
        "endpoint:     {}:{} (schema {})",
        d.host, d.port, d.database
    );
    println!("node:         {}", d.node);
    if let Some(p) = &d.moving {
        let now = stratus_core::time::now_ms();
        println!("moving:       {}", move_progress(p, now));
    }
    match (d.pid, &d.backend) {
        (Some(pid), Some(backend)) => println!("server:       mariadbd pid {pid} on {backend}"),
        _ => println!("server:       not running"),
    }
    if let Some(m) = &d.measured {
        let cpu = m
            .cpu_millis
            .map_or("–".to_owned(), |c| format!("{c:.0} millicores"));
        let hit = m
            .buffer_pool_hit_ratio
            .map_or("–".to_owned(), |h| format!("{:.2} %", h * 100.0));
        println!(
            "load:         CPU {cpu}, memory {}, buffer pool hit ratio {hit}",
            bytes(m.memory_bytes)
        );
    }
    let a = &d.activity;
    println!(
        "clients:      {} connected, {} running, {} in a transaction, {} pinned",
        a.connections, a.statements_running, a.open_transactions, a.pinned_sessions
    );
    if let Some(dir) = &d.data_dir {
        println!("data:         {dir}");
    }
    println!("created:      {}", d.created_at);
    Ok(())
}

async fn user(api: &ApiClient, json: bool, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            db,
            user,
            password,
            save_credentials,
        } => {
            let c = api
                .create_user(
                    &db,
                    &CreateUserRequest {
                        name: user.clone(),
                        password,
                    },
                )
                .await?;
            // Shown before anything else can fail: the password exists nowhere else.
            if json {
                print_json(&c)?;
            } else {
                println!("Created user {} on {}.", c.user, c.database);
                println!("  {}", c.connection_string);
            }
            if save_credentials {
                match api.show(&db).await {
                    Ok(d) => save_or_warn(
                        &crate::connect::Credentials {
                            service: &db,
                            schema: &d.database,
                            user: &c.user,
                            password: &c.password,
                            host: &c.host,
                            port: c.port,
                        },
                        &format!("stratus connect {db} --user {user}"),
                        json,
                    ),
                    Err(e) => eprintln!("warning: credentials not saved: {e}"),
                }
            }
            Ok(())
        }
        UserCommand::List { db } => {
            let users = api.users(&db).await?;
            if json {
                return print_json(&users);
            }
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    vec![
                        u.name.clone(),
                        if u.owner {
                            "owner".into()
                        } else {
                            "user".into()
                        },
                        u.created_at.clone(),
                    ]
                })
                .collect();
            table(&["USER", "ROLE", "CREATED"], &rows);
            Ok(())
        }
        UserCommand::Delete { db, user } => {
            api.delete_user(&db, &user).await?;
            if json {
                return print_json(
                    &serde_json::json!({"database": db, "user": user, "deleted": true}),
                );
            }
            println!("Deleted user {user} of {db}.");
            Ok(())
        }
    }
}

async fn events(api: &ApiClient, json: bool, args: EventsArgs) -> anyhow::Result<()> {
    let mut batch = api
        .events(args.db.as_deref(), None, Some(args.limit))
        .await?;
    if json && !args.follow {
        return print_json(&batch);
    }
    let mut after = 0;
    loop {
        for e in &batch {
            print_event(e, json)?;
            after = e.id;
        }
        if !args.follow {
            return Ok(());
        }
        // Following polls the API once a second, as `kubectl get -w` falls back to.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        batch = api.events(args.db.as_deref(), Some(after), None).await?;
    }
}

/// One line per event; with `--json` (when following) one JSON object per line.
fn print_event(e: &EventView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        println!("{}  {:<12} {:<13} {}", e.time, e.db, e.kind, e.message);
    }
    Ok(())
}

/// Quotes a password for the shell line printed after `db create`.
fn shell_quote(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
