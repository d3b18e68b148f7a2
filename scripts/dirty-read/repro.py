#!/usr/bin/env python3
"""Standalone reproduction of a dirty read in MariaDB/InnoDB after kill -9 and restart.

No Stratus involved: the script creates its own datadir with mariadb-install-db, runs a private
mariadbd on a unix socket (no TCP), drives a bank-transfer workload from threads, kills the
server with SIGKILL every few seconds, restarts it, and counts reads whose
`SELECT SUM(balance)` is not the invariant total. See README.md next to this file.

Only the mariadbd processes this script starts are ever signalled.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import pymysql
    from pymysql.constants import CLIENT, COMMAND
except ImportError:  # pragma: no cover
    sys.exit("needs PyMySQL: pip install pymysql")

NOW = time.monotonic


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# --------------------------------------------------------------------------------------------
# Server lifecycle
# --------------------------------------------------------------------------------------------

class CpuQuota:
    """A CFS CPU quota for the server alone, as Stratus confines each `mariadbd` (hypothesis 5):
    cgroup v1 `cpu.cfs_quota_us`, or v2 `cpu.max`, with the 100 ms period of both defaults."""

    PERIOD_US = 100_000

    def __init__(self, cores):
        name = "dirty-read-%d" % os.getpid()
        quota = int(cores * self.PERIOD_US)
        if os.path.isdir("/sys/fs/cgroup/cpu"):
            self.path = os.path.join("/sys/fs/cgroup/cpu", name)
            os.mkdir(self.path)
            self._write("cpu.cfs_period_us", self.PERIOD_US)
            self._write("cpu.cfs_quota_us", quota)
        else:
            self.path = os.path.join("/sys/fs/cgroup", name)
            os.mkdir(self.path)
            self._write("cpu.max", "%d %d" % (quota, self.PERIOD_US))

    def _write(self, f, v):
        with open(os.path.join(self.path, f), "w") as fh:
            fh.write(str(v))

    def add(self, pid):
        self._write("cgroup.procs", pid)

    def throttled_ms(self):
        """Time the server spent throttled, in ms (v1 `throttled_time` ns, v2 `throttled_usec`)."""
        try:
            with open(os.path.join(self.path, "cpu.stat")) as fh:
                kv = dict(line.split() for line in fh if line.strip())
        except OSError:
            return None
        if "throttled_time" in kv:
            return int(kv["throttled_time"]) / 1e6
        return int(kv.get("throttled_usec", 0)) / 1e3

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass


class Server:
    def __init__(self, args, base):
        self.args = args
        self.base = base
        self.datadir = os.path.join(base, "data")
        self.sock = os.path.join(base, "mysqld.sock")
        self.errlog = os.path.join(base, "error.log")
        self.proc = None
        self.cgroup = CpuQuota(args.cpu_quota) if args.cpu_quota else None

    def stratus_options(self):
        """The options Stratus writes for every server (`stratus-runtime/src/local/config.rs`),
        encryption at rest included, with a key of this run's own."""
        keys = os.path.join(self.base, "keys.txt")
        if not os.path.exists(keys):
            with open(keys, "w") as f:
                f.write("1;" + os.urandom(32).hex() + "\n")
        return [
            "--plugin-load-add=file_key_management", "--file-key-management-filename=" + keys,
            "--file-key-management-encryption-algorithm=AES_CTR", "--innodb-encrypt-tables=FORCE",
            "--innodb-encrypt-log=ON", "--innodb-encrypt-temporary-tables=ON",
            "--innodb-encryption-threads=1", "--encrypt-tmp-files=ON", "--encrypt-tmp-disk-tables=ON",
            "--encrypt-binlog=ON", "--aria-encrypt-tables=ON", "--symbolic-links=0",
            "--performance-schema=OFF", "--innodb-log-file-size=32M",
            "--innodb-buffer-pool-size-max=256M", "--innodb-buffer-pool-dump-at-shutdown=ON",
            "--innodb-buffer-pool-load-at-startup=ON", "--innodb-buffer-pool-dump-pct=100",
            "--binlog-format=ROW", "--gtid-strict-mode=ON", "--log-slave-updates=ON",
            "--rpl-semi-sync-master-enabled=ON", "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
            "--rpl-semi-sync-master-wait-no-slave=OFF", "--rpl-semi-sync-master-timeout=1000",
            "--log-bin-trust-function-creators=ON",
        ]

    def install(self):
        cmd = [self.args.install_db, "--no-defaults", "--datadir=" + self.datadir,
               "--auth-root-authentication-method=normal", "--skip-test-db"]
        if self.args.stratus_options:
            cmd += self.stratus_options()
        if os.geteuid() == 0:
            cmd.append("--user=root")
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            sys.stderr.write(r.stdout.decode(errors="replace"))
            raise SystemExit("mariadb-install-db failed")

    def start(self):
        a = self.args
        cmd = [a.mariadbd, "--no-defaults", "--datadir=" + self.datadir,
               "--socket=" + self.sock, "--skip-networking",
               "--pid-file=" + os.path.join(self.base, "mysqld.pid"),
               "--log-error=" + self.errlog,
               "--innodb-buffer-pool-size=64M", "--max-connections=3000",
               "--innodb-lock-wait-timeout=10", "--skip-name-resolve",
               "--transaction-isolation=" + a.isolation]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        if not a.no_binlog:
            cmd += ["--log-bin=" + os.path.join(self.base, "data", "binlog"), "--server-id=1"]
        if a.general_log:
            cmd += ["--general-log=1", "--general-log-file=" + os.path.join(self.base, "general.log")]
        if a.stratus_options:
            cmd += self.stratus_options()
        cmd += a.server_opt
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.cgroup:
            self.cgroup.add(self.proc.pid)
        return self.proc.pid

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def shutdown(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()


# --------------------------------------------------------------------------------------------
# Shared state
# --------------------------------------------------------------------------------------------

class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.gate = threading.Event()      # clients may connect only when set
        self.gate.set()
        self.epoch = 0                     # incremented on every (re)start of mariadbd
        self.t_start = {}                  # epoch -> monotonic time the process was spawned
        self.t_ready = {}                  # epoch -> first successful connect seen by anyone
        self.t_recovered_zero = {}         # epoch -> first monitor poll with 0 recovered trx
        self.recovered_initial = {}        # epoch -> count at first monitor poll
        self.t_bank_zero = {}              # same, counting only recovered trx of the bank workload
        self.bank_initial = {}
        self.recovered_rows = {}           # epoch -> INNODB_TRX rows (thread id 0) at first poll
        self.checkpoint_ms = {}            # epoch -> ms the forced checkpoint took (--checkpoint)
        self.dirty_pages_pct = None        # the server's innodb_max_dirty_pages_pct (--checkpoint)
        self.gate_wait_ms = {}             # epoch -> ms from ready to gate open (mitigation)
        self.inflight = {}                 # writer id -> current transfer dict
        self.crash_inflight = {}           # epoch -> writers' transfers in flight at the kill before it
        self.reads = []                    # (epoch, since_ready_s, kind, ok) summarised below
        self.n_reads = 0
        self.n_reads_early = 0             # reads started < 2 s after ready
        self.early_reads = {}              # epoch -> start times (s after ready) of reads < 10 s after ready
        self.dirty = []
        self.n_commits = 0
        self.n_writer_errors = 0
        self.n_aborts = 0
        self.n_replays = 0
        self.n_resizes = 0
        self.resizes = []   # (start, end, bytes) of every buffer-pool resize
        self.n_storm_reads = 0
        self.errors = []

    def note_connect(self, epoch, t):
        with self.lock:
            if epoch not in self.t_ready or t < self.t_ready[epoch]:
                self.t_ready[epoch] = t


def client_flags(args):
    f = 0
    if args.session_track:
        f |= CLIENT.SESSION_TRACK
    return f


def connect_once(st, sock, timeout=5):
    c = pymysql.connect(unix_socket=sock, user="root", database="bank", autocommit=True,
                        connect_timeout=timeout, read_timeout=60, write_timeout=60,
                        client_flag=client_flags(st.args))
    return c


def session_setup(st, c):
    if st.args.session_track:
        with c.cursor() as cur:
            cur.execute("SET session_track_state_change=1, "
                        "session_track_transaction_info='CHARACTERISTICS'")


def connect(st, sock, honour_gate=True):
    """Connect the moment the socket accepts (1 ms polling), like a proxy reconnecting."""
    while not st.stop.is_set():
        if honour_gate and not st.gate.is_set():
            st.gate.wait(0.05)
            continue
        try:
            c = connect_once(st, sock)
        except Exception:
            time.sleep(0.001)
            continue
        t = NOW()
        epoch = st.epoch
        st.note_connect(epoch, t)
        try:
            session_setup(st, c)
            with c.cursor() as cur:
                cur.execute("SELECT CONNECTION_ID()")
                cid = cur.fetchone()[0]
        except Exception:
            try:
                c.close()
            except Exception:
                pass
            continue
        return c, epoch, cid, t
    return None, None, None, None


def quiet_close(c, abrupt=False):
    try:
        if abrupt:
            c._force_close()
        else:
            c.close()
    except Exception:
        pass


# --------------------------------------------------------------------------------------------
# Workload threads
# --------------------------------------------------------------------------------------------

def transfer(st, cur, wid, cid, epoch, rnd, fixed=None):
    a_ = st.args
    if fixed:
        a, b, x = fixed
    else:
        a, b = rnd.sample(range(1, a_.accounts + 1), 2)
        x = rnd.randint(1, 99)
    tr = {"writer": wid, "conn": cid, "epoch": epoch, "a": a, "b": b, "x": x, "stage": "begin"}
    st.inflight[wid] = tr
    cur.execute("BEGIN")
    cur.execute("SELECT balance FROM accounts WHERE id IN (%s,%s) FOR UPDATE", (a, b))
    cur.fetchall()
    tr["stage"] = "locked"
    cur.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (x, a))
    tr["stage"] = "debited"        # total seen by a dirty reader: -x
    cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (x, b))
    tr["stage"] = "credited"
    cur.execute("INSERT INTO transfers(src, dst, amount, conn) VALUES (%s,%s,%s,%s)",
                (a, b, x, cid))
    tr["stage"] = "committing"
    cur.execute("COMMIT")
    st.inflight[wid] = None
    with st.lock:
        st.n_commits += 1


def writer(st, sock, wid):
    a_ = st.args
    rnd = random.Random(a_.seed * 1000 + wid)
    pending = None
    while not st.stop.is_set():
        c, epoch, cid, _ = connect(st, sock)
        if c is None:
            return
        try:
            cur = c.cursor()
            if pending:
                # --replay: the transfer the crash cut off, sent again at once on the new
                # connection, as the proxy replays an interrupted transaction.
                fixed, pending = pending, None
                transfer(st, cur, wid, cid, epoch, rnd, fixed)
                with st.lock:
                    st.n_replays += 1
            while not st.stop.is_set():
                try:
                    transfer(st, cur, wid, cid, epoch, rnd)
                except pymysql.err.OperationalError as e:
                    # deadlock / lock wait timeout: roll back and go on on the same connection
                    if e.args and e.args[0] in (1213, 1205):
                        st.inflight[wid] = None
                        with st.lock:
                            st.n_writer_errors += 1
                        c.rollback()
                        continue
                    raise
                if a_.writer_sleep:
                    time.sleep(a_.writer_sleep)
        except Exception:
            tr = st.inflight[wid]
            if a_.replay and tr and tr["stage"] in ("begin", "locked", "debited", "credited"):
                pending = (tr["a"], tr["b"], tr["x"])
            st.inflight[wid] = None
            with st.lock:
                st.n_writer_errors += 1
            quiet_close(c)


def aborter(st, sock, aid):
    """Hypothesis 2: open a transaction, UPDATE, drop the socket (no ROLLBACK, no COM_QUIT)."""
    a_ = st.args
    rnd = random.Random(a_.seed * 7777 + aid)
    while not st.stop.is_set():
        c, epoch, cid, _ = connect(st, sock)
        if c is None:
            return
        try:
            cur = c.cursor()
            a, b = rnd.sample(range(1, a_.accounts + 1), 2)
            x = rnd.randint(100, 199)        # distinct range: a dirty read of an aborter shows -100..-199
            cur.execute("BEGIN")
            upd = "UPDATE accounts SET balance = balance - %d WHERE id = %d" % (x, a)
            if a_.abort_nowait:
                # send the UPDATE and drop the socket without waiting for its result
                c._execute_command(COMMAND.COM_QUERY, upd)
            else:
                cur.execute(upd)
                if a_.abort_both:
                    cur.execute("UPDATE accounts SET balance = balance + %d WHERE id = %d" % (x, b))
            with st.lock:
                st.n_aborts += 1
        except Exception:
            pass
        quiet_close(c, abrupt=True)
        if a_.abort_sleep:
            time.sleep(a_.abort_sleep)


def big_trx(st, sock):
    """Amplifier for hypothesis 1: keep one large uncommitted transaction open on a separate table
    (UPDATE of --big-trx rows of `filler`), so that every crash leaves a recovered transaction whose
    background rollback takes a long time. The bank table and its invariant are not touched."""
    while not st.stop.is_set():
        c, epoch, cid, _ = connect(st, sock)
        if c is None:
            return
        try:
            cur = c.cursor()
            cur.execute("BEGIN")
            cur.execute("UPDATE filler SET v = v + 1")
            while not st.stop.is_set() and st.epoch == epoch:
                time.sleep(0.05)
                cur.execute("SELECT 1")
        except Exception:
            pass
        quiet_close(c)


def check_read(st, c, value, kind, epoch, cid, nth, t_conn, t0, t1, storm=False):
    a_ = st.args
    total = a_.accounts * a_.balance
    with st.lock:
        st.n_reads += 1
        tr = st.t_ready.get(epoch, t0)
        since = t0 - tr
        if since < 2.0 and epoch > 0:
            st.n_reads_early += 1
        if epoch > 0 and since < 10.0:
            st.early_reads.setdefault(epoch, []).append(since)
        tz = st.t_bank_zero.get(epoch)
        if storm:
            st.n_storm_reads += 1
    if value == total:
        return
    delta = value - total
    live = [dict(v) for v in list(st.inflight.values()) if v and v["epoch"] == epoch]
    rec = {
        "value": value, "delta": delta, "kind": kind, "storm": storm,
        "epoch": epoch, "since_ready_ms": round(since * 1000, 1),
        "read_ms": round((t1 - t0) * 1000, 1),
        "conn": cid, "nth_read_on_conn": nth, "conn_age_ms": round((t0 - t_conn) * 1000, 1),
        "new_conn": nth == 0,
        "recovered_zero_at_ms": None if tz is None else round((tz - tr) * 1000, 1),
        "recovered_present_by_monitor": bool(st.bank_initial.get(epoch)) and (tz is None or t0 < tz),
        "recovered_initial": st.recovered_initial.get(epoch),
        "bank_recovered_initial": st.bank_initial.get(epoch),
        "live_inflight_matching": [v for v in live if v["x"] == -delta],
        "crash_inflight_matching": [v for v in st.crash_inflight.get(epoch, []) if v["x"] == -delta],
        "crash_inflight": st.crash_inflight.get(epoch, []),
    }
    if st.resizes:
        with st.lock:
            rs = list(st.resizes)
        # the resize that overlapped the read, or the last one that ended before it
        over = [r for r in rs if r[0] <= t1 and r[1] >= t0]
        before = [r for r in rs if r[1] < t0]
        rec["resize_overlapping"] = [[round((r[0] - t0) * 1000, 1), round((r[1] - t0) * 1000, 1), r[2]]
                                     for r in over]
        rec["ms_since_last_resize_end"] = round((t0 - before[-1][1]) * 1000, 1) if before else None
    try:  # right after, on the same connection
        with c.cursor() as cur:
            cur.execute("SELECT trx_id, trx_state, trx_mysql_thread_id, trx_rows_modified, "
                        "trx_started FROM information_schema.INNODB_TRX")
            rows = cur.fetchall()
            rec["innodb_trx_after"] = [[str(x) for x in r] for r in rows]
            rec["recovered_rows_after"] = sum(1 for r in rows if r[2] == 0)
            cur.execute("SELECT SUM(balance) FROM accounts")
            rec["reread"] = int(cur.fetchone()[0])
    except Exception as e:
        rec["after_error"] = repr(e)
    with st.lock:
        st.dirty.append(rec)
    log("DIRTY READ", json.dumps({k: v for k, v in rec.items() if k != "crash_inflight"}))


def do_read(cur, kind):
    if kind == "auto":
        cur.execute("SELECT SUM(balance) FROM accounts")
        return int(cur.fetchone()[0])
    cur.execute("START TRANSACTION READ ONLY")
    cur.execute("SELECT SUM(balance) FROM accounts")
    v = int(cur.fetchone()[0])
    cur.execute("COMMIT")
    return v


def reader(st, sock, rid):
    a_ = st.args
    kinds = {"auto": ["auto"], "ro": ["ro"], "both": ["auto", "ro"]}[a_.read_mode]
    while not st.stop.is_set():
        c, epoch, cid, t_conn = connect(st, sock)
        if c is None:
            return
        nth = 0
        try:
            cur = c.cursor()
            while not st.stop.is_set():
                kind = kinds[nth % len(kinds)]
                t0 = NOW()
                v = do_read(cur, kind)
                t1 = NOW()
                check_read(st, c, v, kind, epoch, cid, nth, t_conn, t0, t1)
                nth += 1
                if a_.reader_sleep:
                    time.sleep(a_.reader_sleep)
        except Exception:
            quiet_close(c)


def resizer(st, sock):
    """Hypothesis 5: the buffer pool resized while clients run, as Stratus's autoscaler does
    (`SET GLOBAL innodb_buffer_pool_size`), alternating between the two `--resize` sizes."""
    sizes = [int(x) << 20 for x in st.args.resize.split(",")]
    rnd = random.Random(st.args.seed * 7919)
    nth = 0
    while not st.stop.is_set():
        c, epoch, cid, _ = connect(st, sock, honour_gate=False)
        if c is None:
            return
        try:
            cur = c.cursor()
            while not st.stop.is_set() and st.epoch == epoch:
                time.sleep(st.args.resize_every * rnd.uniform(0.5, 1.5))
                size = sizes[nth % len(sizes)]
                t0 = NOW()
                cur.execute("SET GLOBAL innodb_buffer_pool_size = %d" % size)
                # the statement may return before the resize is over: wait for its report
                while not st.stop.is_set():
                    cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_resize_status'")
                    row = cur.fetchone()
                    status = (row[1] if row else "") or ""
                    if not status or "Completed" in status or "complete" in status.lower():
                        break
                    time.sleep(0.01)
                nth += 1
                with st.lock:
                    st.n_resizes += 1
                    st.resizes.append((t0, NOW(), size))
        except Exception:
            pass
        finally:
            try:
                c.close()
            except Exception:
                pass


def storm_client(st, sock, barrier_epoch):
    """Hypothesis 3: one new connection per restart that reads once the moment it can."""
    c, epoch, cid, t_conn = connect(st, sock)
    if c is None:
        return
    try:
        cur = c.cursor()
        for nth, kind in enumerate(("auto", "ro")):
            t0 = NOW()
            v = do_read(cur, kind)
            check_read(st, c, v, kind, epoch, cid, nth, t_conn, t0, NOW(), storm=True)
    except Exception:
        pass
    quiet_close(c)


# --------------------------------------------------------------------------------------------
# Supervisor: kills, restarts, recovered-transaction monitor, mitigation gate
# --------------------------------------------------------------------------------------------

RECOVERED_SQL = "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = 0"


def monitor_recovered(st, sock, epoch, open_gate):
    """Poll the count of recovered transactions (thread id 0) from the moment the server accepts
    until it is 0. With the mitigation, only then open the gate for clients."""
    a_ = st.args
    first = True
    done = False
    while not done and not st.stop.is_set() and st.epoch == epoch:
        try:
            c = connect_once(st, sock)
        except Exception:
            time.sleep(0.001)
            continue
        t_conn = NOW()
        st.note_connect(epoch, t_conn)
        try:
            cur = c.cursor()
            while not st.stop.is_set() and st.epoch == epoch:
                cur.execute("SELECT trx_id, trx_state, trx_rows_modified, trx_started "
                            "FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = 0")
                rows = cur.fetchall()
                n = len(rows)
                # bank transfers modify at most 3 rows; with --big-trx the filler transaction is bigger
                nbank = sum(1 for r in rows if int(r[2]) <= 3) if a_.big_trx else n
                if first:
                    st.recovered_initial[epoch] = n
                    st.bank_initial[epoch] = nbank
                    st.recovered_rows[epoch] = [[str(x) for x in r] for r in rows]
                    first = False
                if nbank == 0 and epoch not in st.t_bank_zero:
                    with st.lock:
                        st.t_bank_zero[epoch] = NOW()
                if n == 0:
                    t = NOW()
                    with st.lock:
                        st.t_recovered_zero[epoch] = t
                        tr = st.t_ready.get(epoch, t_conn)
                    if a_.checkpoint:
                        took = force_checkpoint(st, epoch, cur)
                        if took is not None:
                            st.checkpoint_ms[epoch] = took
                        t = NOW()
                    if open_gate:
                        st.gate_wait_ms[epoch] = round((t - tr) * 1000, 1)
                        st.gate.set()
                    done = True
                    break
                time.sleep(a_.poll_ms / 1000.0)
        except Exception as e:
            if not st.stop.is_set() and st.epoch == epoch:
                log("monitor error (retrying)", repr(e))
        quiet_close(c)


def recovery_checkpoints(errlog):
    """The checkpoint LSN each crash recovery started from, in order, from the error log."""
    try:
        with open(errlog, errors="replace") as f:
            return [int(m) for m in re.findall(r"crash recovery from checkpoint LSN=(\d+)", f.read())]
    except OSError:
        return []


def longest_run(xs):
    best = run = 0
    for i, x in enumerate(xs):
        run = run + 1 if i and xs[i - 1] == x else 1
        best = max(best, run)
    return best


def force_checkpoint(st, epoch, cur):
    """Hypothesis 7's candidate defence: a checkpoint past the end of the crash recovery before
    clients come in, so that the next crash recovers only this life's log. The server has no
    statement for it; with `innodb_max_dirty_pages_pct = 0` its page cleaner writes every dirty
    page and then the checkpoint. Returns the milliseconds it took (None if this life ended or
    30 s passed first)."""
    t0 = NOW()
    if st.dirty_pages_pct is None:
        # Read once, in the first life: every life starts with the same options, and a later
        # read could see the 0 of an attempt whose connection dropped before it put it back.
        cur.execute("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
        st.dirty_pages_pct = cur.fetchone()[0]
    cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_lsn_current'")
    target = int(cur.fetchone()[1])
    cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
    try:
        while not st.stop.is_set() and st.epoch == epoch and NOW() - t0 < 30:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_lsn_last_checkpoint'")
            if int(cur.fetchone()[1]) >= target:
                return round((NOW() - t0) * 1000, 1)
            time.sleep(0.005)
        return None
    finally:
        cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = %s" % st.dirty_pages_pct)


def busy_loop():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    x = 0
    while True:
        x += 1


def setup_schema(st, srv):
    a_ = st.args
    c = None
    for _ in range(3000):
        try:
            c = pymysql.connect(unix_socket=srv.sock, user="root", autocommit=True)
            break
        except Exception:
            time.sleep(0.01)
    if c is None:
        raise SystemExit("server did not come up; see " + srv.errlog)
    cur = c.cursor()
    cur.execute("CREATE DATABASE bank")
    cur.execute("USE bank")
    cur.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB")
    cur.execute("CREATE TABLE transfers (id BIGINT AUTO_INCREMENT PRIMARY KEY, src INT, dst INT, "
                "amount BIGINT, conn BIGINT, at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB")
    cur.executemany("INSERT INTO accounts VALUES (%s,%s)",
                    [(i, a_.balance) for i in range(1, a_.accounts + 1)])
    if a_.big_trx:
        cur.execute("CREATE TABLE filler (id INT PRIMARY KEY, v INT NOT NULL, pad CHAR(100) NOT NULL DEFAULT '') ENGINE=InnoDB")
        cur.execute("INSERT INTO filler (id, v) SELECT seq, 0 FROM seq_1_to_%d" % a_.big_trx)
    cur.execute("SELECT VERSION()")
    ver = cur.fetchone()[0]
    c.close()
    return ver


def final_check(st, srv):
    a_ = st.args
    c = pymysql.connect(unix_socket=srv.sock, user="root", database="bank", autocommit=True)
    cur = c.cursor()
    # wait until recovered transactions are gone so the ledger is final
    for _ in range(6000):
        cur.execute(RECOVERED_SQL)
        if cur.fetchone()[0] == 0:
            break
        time.sleep(0.01)
    cur.execute("SELECT SUM(balance), COUNT(*) FROM accounts")
    s, n = cur.fetchone()
    cur.execute("SELECT COUNT(*) FROM transfers")
    nt = cur.fetchone()[0]
    c.close()
    return int(s), int(n), int(nt)


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20, help="number of kill -9 + restart cycles (0: no crash)")
    p.add_argument("--interval", type=float, default=4.0,
                   help="mean seconds between kills (uniform in [0.5x, 1.5x])")
    p.add_argument("--duration", type=float, default=0,
                   help="stop after this many seconds (default: when --kills are done; required with --kills 0)")
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--readers", type=int, default=4)
    p.add_argument("--read-mode", choices=["auto", "ro", "both"], default="both",
                   help="autocommit SELECT, START TRANSACTION READ ONLY, or alternate")
    p.add_argument("--aborters", type=int, default=0,
                   help="threads that BEGIN; UPDATE; then close the socket abruptly (hypothesis 2)")
    p.add_argument("--abort-both", action="store_true", help="aborters run both UPDATEs of a transfer")
    p.add_argument("--abort-nowait", action="store_true",
                   help="aborters send the UPDATE and close the socket without waiting for its result")
    p.add_argument("--replay", action="store_true",
                   help="a writer cut off by a crash sends its interrupted transfer again first (as the proxy replays)")
    p.add_argument("--abort-sleep", type=float, default=0.0, help="seconds between aborter connections")
    p.add_argument("--storm", type=int, default=0,
                   help="extra new connections per restart that read the moment the socket accepts (hypothesis 3)")
    p.add_argument("--session-track", action="store_true",
                   help="CLIENT_SESSION_TRACK + SET session_track_state_change=1, "
                        "session_track_transaction_info='CHARACTERISTICS' on every connection")
    p.add_argument("--wait-recovered", action="store_true",
                   help="mitigation: after a restart hold all clients until INNODB_TRX has no "
                        "row with trx_mysql_thread_id = 0")
    p.add_argument("--checkpoint", action="store_true",
                   help="mitigation (hypothesis 7): after a restart, once the recovered "
                        "transactions are gone, force a checkpoint before clients come in "
                        "(implies --wait-recovered)")
    p.add_argument("--no-monitor", action="store_true",
                   help="do not poll INNODB_TRX after restarts (not allowed with --wait-recovered)")
    # More than 100 ms: InnoDB refreshes INNODB_TRX only once it went unread that long
    # (CACHE_MIN_IDLE_TIME_NS, storage/innobase/trx/trx0i_s.cc); a faster poll keeps reading
    # the rows of its first answer. Runs before 2026-12-02 used 2 ms (docs/dirty-read.md).
    p.add_argument("--poll-ms", type=float, default=150.0,
                   help="INNODB_TRX poll period (keep it above 100 ms)")
    p.add_argument("--big-trx", type=int, default=0, metavar="ROWS",
                   help="amplifier: one session keeps an uncommitted UPDATE of ROWS rows of a separate "
                        "table open, so each crash leaves a long background rollback")
    p.add_argument("--busy", type=int, default=0, help="busy-loop processes to starve the CPU")
    p.add_argument("--stratus-options", action="store_true",
                   help="run the server with the options Stratus writes, encryption included (hypothesis 5)")
    p.add_argument("--cpu-quota", type=float, default=0, metavar="CORES",
                   help="confine mariadbd to a CFS quota of this many cores, as Stratus does (hypothesis 5)")
    p.add_argument("--resize", default=None, metavar="MB,MB",
                   help="resize the buffer pool between these sizes while clients run (hypothesis 5)")
    p.add_argument("--resize-every", type=float, default=2.0, metavar="S")
    p.add_argument("--accounts", type=int, default=20)
    p.add_argument("--balance", type=int, default=1000)
    p.add_argument("--writer-sleep", type=float, default=0.0)
    p.add_argument("--reader-sleep", type=float, default=0.0)
    p.add_argument("--isolation", default="REPEATABLE-READ")
    p.add_argument("--no-binlog", action="store_true", help="run without --log-bin")
    p.add_argument("--general-log", action="store_true")
    p.add_argument("--server-opt", action="append", default=[], help="extra mariadbd option (repeatable)")
    p.add_argument("--mariadbd", default=shutil.which("mariadbd") or "/usr/sbin/mariadbd")
    p.add_argument("--install-db", default=shutil.which("mariadb-install-db") or "mariadb-install-db")
    p.add_argument("--tmp", default=None, help="parent directory for the temporary datadir")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--json", default=None, help="write the summary (and every dirty read) here")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.kills == 0 and not args.duration:
        p.error("--kills 0 needs --duration")
    if args.checkpoint:
        args.wait_recovered = True
    if args.wait_recovered and args.no_monitor:
        p.error("--wait-recovered and --checkpoint need the monitor")

    base = tempfile.mkdtemp(prefix="dirty-read-", dir=args.tmp)
    srv = Server(args, base)
    st = State(args)
    busy = []
    threads = []
    t_begin = NOW()
    kills_done = 0
    try:
        log("datadir", base)
        srv.install()
        srv.start()
        ver = setup_schema(st, srv)
        log("server", ver, "pid", srv.proc.pid)
        st.t_start[0] = NOW()
        st.t_ready[0] = NOW()
        st.t_recovered_zero[0] = st.t_bank_zero[0] = st.t_ready[0]
        import multiprocessing
        for _ in range(args.busy):
            bp = multiprocessing.Process(target=busy_loop, daemon=True)
            bp.start()
            busy.append(bp)
        for i in range(args.writers):
            threads.append(threading.Thread(target=writer, args=(st, srv.sock, i), daemon=True))
        for i in range(args.readers):
            threads.append(threading.Thread(target=reader, args=(st, srv.sock, i), daemon=True))
        for i in range(args.aborters):
            threads.append(threading.Thread(target=aborter, args=(st, srv.sock, i), daemon=True))
        if args.big_trx:
            threads.append(threading.Thread(target=big_trx, args=(st, srv.sock), daemon=True))
        if args.resize:
            threads.append(threading.Thread(target=resizer, args=(st, srv.sock), daemon=True))
        for t in threads:
            t.start()

        rnd = random.Random(args.seed)
        deadline = t_begin + args.duration if args.duration else None
        last_progress = NOW()
        while True:
            if deadline and NOW() >= deadline:
                break
            # the interval counts from the moment the server accepts connections, so that every
            # kill hits a serving server (under CPU starvation a restart can take seconds)
            e_now = st.epoch
            t_wait = NOW()
            while e_now not in st.t_ready and not (deadline and NOW() >= deadline):
                if NOW() - t_wait > 300 or srv.proc.poll() is not None:
                    raise SystemExit("mariadbd did not come back after a kill; see %s (kept)"
                                     % srv.errlog)
                time.sleep(0.005)
            wait = args.interval * rnd.uniform(0.5, 1.5) if args.kills else 1.0
            if deadline:
                wait = min(wait, max(0.0, deadline - NOW()))
            time.sleep(wait)
            if args.kills and kills_done >= args.kills:
                break   # the last restart has served one interval too
            if not args.kills or (deadline and NOW() >= deadline):
                if NOW() - last_progress >= 60:
                    last_progress = NOW()
                    log("elapsed %.0f s reads %d commits %d aborted %d dirty %d"
                        % (NOW() - t_begin, st.n_reads, st.n_commits, st.n_aborts, len(st.dirty)))
                continue
            # ---- kill -9 and restart ----
            if args.wait_recovered:
                st.gate.clear()
            snap = [dict(v) for v in list(st.inflight.values()) if v]
            srv.kill9()
            kills_done += 1
            with st.lock:
                st.epoch += 1
                e = st.epoch
                st.crash_inflight[e] = snap
            srv.start()
            st.t_start[e] = NOW()
            if not args.no_monitor:
                threading.Thread(target=monitor_recovered,
                                 args=(st, srv.sock, e, args.wait_recovered), daemon=True).start()
            for _ in range(args.storm):
                threading.Thread(target=storm_client, args=(st, srv.sock, e), daemon=True).start()
            if kills_done % 10 == 0:
                log("kills", kills_done, "reads", st.n_reads, "commits", st.n_commits,
                    "dirty", len(st.dirty))
        st.stop.set()
        st.gate.set()
        for t in threads:
            t.join(30)
        elapsed = NOW() - t_begin
        for bp in busy:
            bp.terminate()
        for bp in busy:
            bp.join(5)
        busy = []
        # final ledger check after a clean restart
        srv.kill9()
        srv.start()
        total, n, nt = None, None, None
        for _ in range(3000):
            try:
                total, n, nt = final_check(st, srv)
                break
            except Exception:
                time.sleep(0.01)
        srv.shutdown()

        ready_to_zero = []
        for e, tz in st.t_recovered_zero.items():
            if e in st.t_ready and e > 0 and st.recovered_initial.get(e):
                ready_to_zero.append((tz - st.t_ready[e]) * 1000)
        restart_ms = [(st.t_ready[e] - st.t_start[e]) * 1000 for e in st.t_start if e > 0 and e in st.t_ready]
        rec_init = [st.recovered_initial[e] for e in st.recovered_initial if e > 0]
        n_exposed = 0
        bank_zero_ms = []
        for e in st.bank_initial:
            if e > 0 and st.bank_initial[e] and e in st.t_bank_zero and e in st.t_ready:
                bank_zero_ms.append(round((st.t_bank_zero[e] - st.t_ready[e]) * 1000, 1))
        for e, ts in st.early_reads.items():
            if st.bank_initial.get(e) and e in st.t_ready:
                lim = st.t_bank_zero.get(e, NOW()) - st.t_ready[e]
                n_exposed += sum(1 for x in ts if x < lim)
        bank_init = [st.bank_initial[e] for e in st.bank_initial if e > 0]
        summary = {
            "version": ver, "args": vars(args), "elapsed_s": round(elapsed, 1),
            "kills": kills_done, "reads": st.n_reads, "reads_lt_2s_after_ready": st.n_reads_early,
            "reads_while_recovered_trx_present": n_exposed if not args.no_monitor else None,
            "storm_reads": st.n_storm_reads,
            "commits": st.n_commits, "writer_errors": st.n_writer_errors, "aborts": st.n_aborts, "replays": st.n_replays,
            "resizes": st.n_resizes, "throttled_ms": srv.cgroup.throttled_ms() if srv.cgroup else None,
            "dirty_reads": len(st.dirty),
            "dirty_reads_while_recovered_present": sum(1 for d in st.dirty if d["recovered_present_by_monitor"]),
            "restarts_with_recovered_trx": sum(1 for x in rec_init if x),
            "recovered_trx_per_restart": rec_init,
            "ready_to_recovered_zero_ms": sorted(round(x, 1) for x in ready_to_zero),
            "restarts_with_bank_recovered_trx": sum(1 for x in bank_init if x),
            "bank_recovered_trx_per_restart": bank_init,
            "ready_to_bank_recovered_zero_ms": sorted(bank_zero_ms),
            "gate_wait_ms": sorted(st.gate_wait_ms.values()),
            "checkpoint_ms": sorted(st.checkpoint_ms.values()),
            "recovery_checkpoints": recovery_checkpoints(srv.errlog),
            "spawn_to_ready_ms": sorted(round(x, 1) for x in restart_ms),
            "final_sum": total, "final_accounts": n, "final_transfers": nt,
            "dirty": st.dirty,
        }
        rz = summary["ready_to_recovered_zero_ms"]
        print()
        print("=== summary ===")
        print("mariadbd %s; %d kills in %.1f s (%.2f min); writers %d, readers %d (%s), aborters %d, "
              "storm %d, session-track %s, busy %d, wait-recovered %s, binlog %s"
              % (ver, kills_done, elapsed, elapsed / 60, args.writers, args.readers, args.read_mode,
                 args.aborters, args.storm, args.session_track, args.busy, args.wait_recovered,
                 not args.no_binlog))
        print("reads %d (%d within 2 s of a restart, %s while recovered bank trx present, %d by storm "
              "connections); commits %d; aborted connections %d; replayed transfers %d"
              % (st.n_reads, st.n_reads_early, summary["reads_while_recovered_trx_present"],
                 st.n_storm_reads, st.n_commits, st.n_aborts, st.n_replays))
        if args.stratus_options or args.cpu_quota or args.resize:
            print("stratus options %s; cpu quota %s cores (throttled %s ms in all); buffer pool resizes %d"
                  % (args.stratus_options, args.cpu_quota or None, summary["throttled_ms"], st.n_resizes))
        print("restarts with recovered trx at ready: %d of %d; for those, ready->recovered-zero ms: n=%d p50=%s p90=%s max=%s"
              % (summary["restarts_with_recovered_trx"], len(rec_init), len(rz), pct(rz, 50),
                 pct(rz, 90), max(rz) if rz else None))
        sr = summary["spawn_to_ready_ms"]
        print("restarts that became ready: %d of %d kills; spawn->ready ms p50=%s p90=%s max=%s"
              % (len(sr), kills_done, pct(sr, 50), pct(sr, 90), max(sr) if sr else None))
        if args.big_trx:
            print("restarts with recovered *bank* trx at ready: %d of %d; ready->bank-zero ms: p50=%s p90=%s max=%s"
                  % (summary["restarts_with_bank_recovered_trx"], len(bank_init), pct(bank_zero_ms, 50),
                     pct(bank_zero_ms, 90), max(bank_zero_ms) if bank_zero_ms else None))
        rc = summary["recovery_checkpoints"]
        print("crash recoveries %d, from %d distinct checkpoints; most recoveries from one "
              "checkpoint (server lives whose log one recovery replayed): %d"
              % (len(rc), len(set(rc)), longest_run(rc)))
        if args.checkpoint:
            g = summary["checkpoint_ms"]
            print("forced checkpoint ms: n=%d p50=%s p90=%s max=%s"
                  % (len(g), pct(g, 50), pct(g, 90), max(g) if g else None))
        if args.wait_recovered:
            g = summary["gate_wait_ms"]
            print("gate wait ms: n=%d p50=%s p90=%s max=%s" % (len(g), pct(g, 50), pct(g, 90),
                                                                max(g) if g else None))
        print("DIRTY READS: %d (%d while recovered trx present)"
              % (len(st.dirty), summary["dirty_reads_while_recovered_present"]))
        for d in st.dirty:
            print("  total %d (delta %+d) %s %s conn %s nth %d, %.1f ms after ready, recovered-zero at %s ms, "
                  "recovered rows after: %s, reread %s, crash-inflight match %d, live match %d"
                  % (d["value"], d["delta"], d["kind"], "storm" if d["storm"] else "", d["conn"],
                     d["nth_read_on_conn"], d["since_ready_ms"], d["recovered_zero_at_ms"],
                     d.get("recovered_rows_after"), d.get("reread"),
                     len(d["crash_inflight_matching"]), len(d["live_inflight_matching"])))
        print("final: SUM=%s over %s accounts, %s transfers (expected SUM %d)"
              % (total, n, nt, args.accounts * args.balance))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=1, default=str)
        return 1 if st.dirty else 0
    except SystemExit:
        args.keep = True
        raise
    finally:
        st.stop.set()
        st.gate.set()
        for bp in busy:
            bp.terminate()
        srv.kill9()
        if srv.cgroup:
            srv.cgroup.remove()
        if args.keep:
            log("kept", base)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
