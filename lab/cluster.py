"""The Manycast cluster on the default lab topology, with the real binaries of this workspace.

    with Cluster(bin_dir="target/release", run_dir="target/demo/run") as c:
        c.up()            # or the steps one by one, as the demo does
        ...

Steps (each a method, so that the demo can narrate them and later steps can be added):
  start_net        the mininet topology (topo.py), under the machine-wide lab lock
  make_keys        group key, member keys and certificates with `manycastctl`
  start_keystore   the real `dns-keystore` on ks (10.53.0.2:53)
  publish          the group record over TSIG with `manycastctl keystore publish`
  start_verifier   the real `manycast-verifier` on r1, native mode, keys from the keystore
  start_servers    real `manycast-server`s on srv1..srvN (native UDP reference service),
                   control group on the back-end segment s77
  wait_converged   every running server at one epoch, the verifier holding their claims

Dual stack (`dual_stack = True`, off by default; the demo and the `dual-stack` scenario set it):
the certificates are version 2 and list GROUP6 (`cert issue --group6`), GROUP6's record is
published too (its own name), the verifier protects ff3e::/32 (`protected6`) with GROUP6's key
from the keystore (`groups6`), and every server serves IPv6 clients on [GROUP6]:PORT (`group6`)
from the same allocation (the default slicing); `converged` then also
waits for the verifier to hold every running server's IPv6 claim at the agreed epoch.

Everything started is stopped by `stop()` (also from `__exit__`, on error, Ctrl-C and SIGTERM
when the caller turns SIGTERM into an exception, as lab.py and demo.py do). Each process's pid
is also written to PID_FILE, so that `lab.py clean` can stop what a crashed run left behind.
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import topo

LOCK_PATH = "/tmp/manycast-lab.lock"
PID_FILE = "/run/manycast-lab.pids"
GROUP = "232.1.1.1"
GROUP6 = "ff3e::8000:1"
PROTECTED6 = "ff3e::/32"
CONTROL_GROUP = "239.77.0.1"
PORT = 5000
ZONE = "groups.manycast.test"
KEYSTORE_ADDR = f"{topo.KEYSTORE_SUBNET[2]}:53"
BINARIES = ("manycastctl", "dns-keystore", "manycast-verifier", "manycast-server")
# A bpf filesystem for the verifier's pinned VIP maps (SPEC.md §10.3): mininet's hosts do not
# see the host's /sys/fs/bpf, so the lab mounts one under /run (which they share) and names the
# router's directory in its config. One lab runs at a time (the lab lock), so one directory.
LAB_BPF = "/run/manycast-lab-bpf"


class Interrupted(Exception):
    """SIGTERM during a lab run, raised from the handler so that the run's clean-up runs."""


def prepare_run(prog):
    """What every lab runner does first: root or a one-line exit, mininet's log quiet, and
    SIGTERM turned into `Interrupted` (handled like Ctrl-C)."""
    if os.geteuid() != 0:
        sys.exit(f"{prog}: needs root (network namespaces, bridges, raw sockets)")
    from mininet.log import setLogLevel
    setLogLevel("error")

    def on_term(*_):
        raise Interrupted()

    signal.signal(signal.SIGTERM, on_term)


class LabError(RuntimeError):
    pass


class LabLock:
    """flock on LOCK_PATH: mininet's host and interface names are fixed, so one lab at a time.
    A caller that holds the lock itself across the run (a test that checks for leftovers
    afterwards) sets MANYCAST_LAB_LOCK_HELD=1, and the lab does not lock again."""

    def __init__(self, path=LOCK_PATH):
        self.path = path
        self.fd = None

    def acquire(self, log=None):
        if os.environ.get("MANYCAST_LAB_LOCK_HELD") == "1":
            return
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for the lab lock {self.path} (another lab is running)")
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def wait_for(what, cond, timeout=30.0, interval=0.1):
    """Polls `cond` until true; a deadline for a hung run, not a timing check."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def read_prom(path, with_mtime=False):
    """Prometheus text as {name: value} (labels kept in the name); {} if missing. With
    `with_mtime`: (the file's mtime, or None, and the values), from the same open file."""
    out = {}
    mtime = None
    try:
        with open(path) as f:
            mtime = os.fstat(f.fileno()).st_mtime
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
    except FileNotFoundError:
        pass
    return (mtime, out) if with_mtime else out


def record_pid(pid, argv):
    """Records a started process: its pid and its first two arguments (program, script)."""
    with open(PID_FILE, "a") as f:
        f.write(f"{pid} {' '.join(argv[:2])}\n")


def kill_recorded():
    """Stops the processes a crashed lab left (recorded in PID_FILE), each by its pid, after
    checking that the pid still runs the binary recorded for it. Returns how many."""
    killed = 0
    try:
        with open(PID_FILE) as f:
            rows = [line.split(" ", 1) for line in f if line.strip()]
    except FileNotFoundError:
        return 0
    for pid, recorded in rows:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if " ".join(argv[:2]) == recorded.strip():
            try:
                # A lab process leads its own process group (mininet's `mnexec -d` calls
                # setsid): the group goes too, so an nginx master takes its worker with it.
                if os.getpgid(int(pid)) == int(pid):
                    os.killpg(int(pid), signal.SIGKILL)
                else:
                    os.kill(int(pid), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    os.unlink(PID_FILE)
    return killed


def clean_leftovers():
    """After a crash: the recorded processes (FRR's daemons too), mininet's hosts and links
    (`mn -c`), and the Linux bridges of both topologies, which `mn -c` leaves. Call with the
    lab lock held."""
    killed = kill_recorded()
    subprocess.run(["mn", "-c"], capture_output=True, check=False)
    switches = set(topo.ManycastTopo().switches()) | set(topo.SitesTopo().switches())
    for sw in sorted(switches):
        if os.path.exists(f"/sys/class/net/{sw}/bridge"):
            subprocess.run(["ip", "link", "del", sw], capture_output=True, check=False)
    return killed


class Cluster:
    def __init__(self, bin_dir="target/release", run_dir=None, servers=topo.SERVERS, log=None):
        self.bin_dir = os.path.abspath(bin_dir)
        for b in BINARIES:
            if not os.access(self.bin(b), os.X_OK):
                raise LabError(f"missing binary {self.bin(b)} (build it: cargo build -p ...)")
        self.run_dir = os.path.abspath(run_dir or f"/tmp/manycast-lab-{os.getpid()}")
        self.n_servers = servers
        self.log = log or (lambda msg: None)
        self.lock = LabLock()
        self.net = None
        self.procs = {}  # name -> Popen
        self.ids = {f"srv{i}": i for i in range(1, servers + 1)}
        self.retired = set()  # servers stopped on purpose (see `retire`)

    # IPv6 clients too (module docstring); a class attribute so that subclasses choose.
    dual_stack = False

    # -- helpers -----------------------------------------------------------------------------

    def bin(self, name):
        return os.path.join(self.bin_dir, name)

    def path(self, *parts):
        return os.path.join(self.run_dir, *parts)

    def host(self, name):
        return self.net.get(name)

    def run(self, host, args, check=True, input=None):
        """Runs a command to completion inside `host` (or the root namespace if None), with
        `input` (text) on its stdin if given."""
        if host is None:
            p = subprocess.run(args, capture_output=True, text=True, input=input)
            out, err, rc = p.stdout, p.stderr, p.returncode
        else:
            p = self.host(host).popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.PIPE if input is not None else None)
            out, err = p.communicate(input=input.encode() if input is not None else None, timeout=60)
            out, err, rc = out.decode(), err.decode(), p.returncode
        if check and rc != 0:
            raise LabError(f"{' '.join(args)} on {host or 'root'} failed ({rc}): {err.strip()}")
        return out

    def spawn(self, name, host, args, env=None):
        """Starts a long-running process in `host`, its stderr to <run_dir>/<name>.log."""
        logf = open(self.path(f"{name}.log"), "w")
        e = dict(os.environ)
        e.update(env or {})
        p = self.host(host).popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=e)
        logf.close()
        # mnexec execs the command, so the pid is the program's own.
        record_pid(p.pid, args)
        self.procs[name] = p
        return p

    def alive(self, name):
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def signal(self, name, sig):
        p = self.procs[name]
        if p.poll() is None:
            p.send_signal(sig)

    def wait_exit(self, name, timeout=20):
        return self.procs[name].wait(timeout=timeout)

    def server_metrics(self, name, with_mtime=False):
        """A server's metrics, names without the `manycast_server_` prefix; with `with_mtime`,
        (when the server wrote them, metrics)."""
        mtime, raw = read_prom(self.path(f"{name}.prom"), with_mtime=True)
        m = {k.removeprefix("manycast_server_"): v for k, v in raw.items()}
        return (mtime, m) if with_mtime else m

    def verifier_status(self):
        """The verifier's status (JSON through its status socket), or None."""
        try:
            p = subprocess.run([self.bin("manycast-verifier"), "--status", "--json", "--socket",
                                self.path("verifier.sock")], capture_output=True, timeout=5)
        except subprocess.TimeoutExpired:
            return None
        if p.returncode != 0:
            return None
        try:
            return json.loads(p.stdout)
        except ValueError:
            return None

    def rejected(self, status=None):
        status = status or self.verifier_status() or {}
        return dict((r, n) for r, n in status.get("counters", {}).get("rejected", []))

    def retire(self, name):
        """Marks a process as about to be stopped on purpose: its exit is no error."""
        self.retired.add(name)

    def mld_send_errors(self):
        """Signed MLDv2 joins the servers could not send (their logs), e.g. past the link MTU."""
        n = 0
        for s in self.ids:
            try:
                with open(self.path(f"{s}.log")) as f:
                    n += sum(1 for line in f if "sending signed MLDv2 report" in line)
            except OSError:
                pass
        return n

    def check_processes(self):
        """LabError if a process stopped that nobody stopped (a daemon refused its config or
        crashed), with the last line of its log."""
        for name, p in self.procs.items():
            if p.poll() is not None and name not in self.retired:
                try:
                    with open(self.path(f"{name}.log")) as f:
                        last = (f.read().strip().splitlines() or [""])[-1]
                except OSError:
                    last = ""
                raise LabError(f"{name} exited with status {p.returncode}: {last}")

    def running_servers(self):
        return [s for s in self.ids if self.alive(s)]

    # -- steps -------------------------------------------------------------------------------

    def start_net(self):
        from mininet.net import Mininet
        from mininet.nodelib import LinuxBridge

        self.lock.acquire(self.log)
        # A crashed run's leftovers (we hold the lock, so they are not another live lab's).
        if os.path.exists(PID_FILE) or os.path.exists("/sys/class/net/s77"):
            clean_leftovers()
        if os.path.exists(self.run_dir):
            shutil.rmtree(self.run_dir)
        os.makedirs(self.path("keys"))
        # Before the hosts exist: a mount made later does not reach their mount namespaces.
        self.bpf_pin_dir()
        self.net = Mininet(topo=topo.ManycastTopo(servers=self.n_servers), switch=LinuxBridge,
                           controller=None, autoSetMacs=True, waitConnected=False)
        self.net.start()
        topo.configure(self.net)

    def make_keys(self):
        """The admin's keys: the group key, and per server a key pair and a certificate for
        the service group and the control group."""
        ctl = self.bin("manycastctl")
        k = self.path("keys")
        self.run(None, [ctl, "key", "new", f"{k}/group"])
        for name, mid in self.ids.items():
            self.run(None, [ctl, "key", "new", f"{k}/{name}"])
            self.run(None, [ctl, "cert", "issue", "--group-key", f"{k}/group.key", "--member-key",
                            f"{k}/{name}.pub", "--id", str(mid), "--group", GROUP,
                            "--group", CONTROL_GROUP, *self.cert_args6(), "--out", f"{k}/{name}.cert"])
        self.make_operator()
        return self.run(None, [ctl, "key", "show", f"{k}/group.pub"]).strip()

    def cert_args6(self):
        """`cert issue` options for the IPv6 group (a version 2 certificate, every IPv6 slice)."""
        return ["--group6", GROUP6] if self.dual_stack else []

    def make_operator(self, control_group=CONTROL_GROUP):
        """The operator's key and its certificate from the group key for `control_group`: what
        `manycastctl` needs to move, drain or resume another member (SPEC.md §9.7)."""
        ctl = self.bin("manycastctl")
        k = self.path("keys")
        self.run(None, [ctl, "key", "new", f"{k}/operator"])
        self.run(None, [ctl, "operator", "issue", "--group-key", f"{k}/group.key",
                        "--operator-key", f"{k}/operator.pub", "--control-group", control_group,
                        "--out", f"{k}/operator.cert"])

    def operator_args(self, args):
        """`args` of a `manycastctl` cluster command, with the operator's authority added to the
        commands that act on other members."""
        args = list(args)
        if args and args[0] in ("move", "drain", "resume", "rebalance"):
            k = self.path("keys")
            args += ["--operator-key", f"{k}/operator.key", "--operator-cert", f"{k}/operator.cert"]
        return args

    def start_keystore(self):
        d = self.path("keystore")
        os.makedirs(d)
        cfg = self.path("keystore.toml")
        with open(cfg, "w") as f:
            f.write(f'zone = "{ZONE}"\nstate_dir = "{d}/state"\nlisten = "{KEYSTORE_ADDR}"\n'
                    f'record_ttl = 300\n')
        self.spawn("keystore", "ks", [self.bin("dns-keystore"), "--config", cfg],
                   env={"RUST_LOG": "info"})
        wait_for("the keystore's TSIG key and trust anchor",
                 lambda: os.path.exists(self.tsig_key()) and os.path.exists(self.trust_anchor()))

    def tsig_key(self):
        return self.path("keystore", "state", "tsig.key")

    def trust_anchor(self):
        return self.path("keystore", "state", "trust-anchor.conf")

    def publish(self, group=GROUP, name="demo", extra=()):
        """`group`'s record, TSIG-signed, from the admin on ks; retried while the daemon binds.
        `extra`: more `manycastctl keystore publish` options (`--ttl`, `--vip`)."""
        args = [self.bin("manycastctl"), "keystore", "publish", "--server", KEYSTORE_ADDR,
                "--tsig-key", self.tsig_key(), "--zone", ZONE, "--group", group, "--name", name,
                "--owner", "lab@manycast.test", "--group-pub", self.path("keys", "group.pub"),
                *extra]
        last = []

        def attempt():
            try:
                self.run("ks", args)
                return True
            except LabError as e:
                last[:] = [e]
                return False

        try:
            wait_for(f"publishing the record of {group}", attempt, timeout=20, interval=0.3)
        except LabError as e:
            raise LabError(f"{e}: {last[0] if last else ''}") from None

    def dig(self):
        """The published group record as `dig` shows it (with its RRSIG)."""
        rev = ".".join(reversed(GROUP.split(".")))
        return self.run("r1", ["dig", f"@{KEYSTORE_ADDR.split(':')[0]}", "+dnssec", "+noall",
                               "+answer", f"{rev}.g.{ZONE}", "TXT"])

    def bpf_pin_dir(self):
        """r1's pin directory on the lab's bpf filesystem, mounted on first use (`start_net`
        calls it before the hosts are made); None when no bpf filesystem can be mounted (the
        verifier then pins on nftables, with a warning). Emptied when the lab starts: pins of
        an earlier lab must not steer this one."""
        if not hasattr(self, "_bpf_pin_dir"):
            self._bpf_pin_dir = None
            os.makedirs(LAB_BPF, exist_ok=True)
            mounted = subprocess.run(["findmnt", "-n", "-t", "bpf", LAB_BPF],
                                     capture_output=True).returncode == 0
            if not mounted:
                mounted = subprocess.run(["mount", "-t", "bpf", "bpf", LAB_BPF],
                                         capture_output=True).returncode == 0
            if mounted:
                d = os.path.join(LAB_BPF, "r1")
                shutil.rmtree(d, ignore_errors=True)
                self._bpf_pin_dir = d
        return self._bpf_pin_dir

    def start_verifier(self, groups=(GROUP,), extra="", groups6=(GROUP6,)):
        """The verifier on r1, its keys from the keystore for `groups` (and `groups6` with dual
        stack); `extra` is appended to its config (more `[keystore]` keys, `[[vip]]` tables)."""
        ifs = [f"r1-s{i}" for i in range(1, self.n_servers + 1)]
        ifs += [f"r1-c{c}" for c in range(1, topo.CLIENTS + 1)]
        cfg = self.path("verifier.toml")
        pin = self.bpf_pin_dir()
        pin = f'[vip_pin]\npin_dir = "{pin}"\n' if pin and "[vip_pin]" not in extra else ""
        six = keys6 = ""
        if self.dual_stack:
            six = f'[verifier]\nprotected6 = ["{PROTECTED6}"]\n'
            keys6 = f"groups6 = {json.dumps(list(groups6))}\n"
        with open(cfg, "w") as f:
            f.write(f"interfaces = {json.dumps(ifs)}\n"
                    f'status_socket = "{self.path("verifier.sock")}"\n{pin}{six}'
                    f'[keystore]\nserver = "{KEYSTORE_ADDR}"\n'
                    f'trust_anchor = "{self.trust_anchor()}"\ngroups = {json.dumps(list(groups))}\n'
                    f"{keys6}{extra}")
        self.spawn("verifier", "r1", [self.bin("manycast-verifier"), "--config", cfg],
                   env={"RUST_LOG": "info"})
        wait_for("the verifier's status socket", lambda: self.verifier_status() is not None)

    # The servers' failure-detector timeout (`control.down_after_ms`); None: the daemon's default.
    down_after_ms = None

    def server_config(self, name, service="", group=GROUP, port=PORT, control_group=CONTROL_GROUP,
                      control_port=None, top="", tables=""):
        """Server `name`'s config for one service: `service` prefixes its files and process name
        ("" for the lab's native service); `top` holds top-level keys, `tables` more tables.
        Every daemon gets its own admin socket: the lab's hosts share one filesystem, and a
        second daemon on the default path refuses to start."""
        k = self.path("keys")
        stem = service + name
        control = f"port = {control_port}\n" if control_port else ""
        if self.dual_stack and group == GROUP:
            top = f'group6 = "{GROUP6}"\n' + top
        if self.down_after_ms is not None:
            control += f"down_after_ms = {self.down_after_ms}\n"
        return (f'group = "{group}"\ninterface = "{name}-eth0"\nservice_port = {port}\n'
                f'member_key = "{k}/{name}.key"\nmember_cert = "{k}/{name}.cert"\n'
                f'group_pub = "{k}/group.pub"\nmetrics_file = "{self.path(stem + ".prom")}"\n'
                f'admin_socket = "{self.admin_socket(stem)}"\n{top}'
                f'[control]\ngroup = "{control_group}"\ninterface = "{name}-eth1"\n{control}'
                f'{tables}')

    def admin_socket(self, name):
        """Where `manycastctl --socket` reaches server `name`'s daemon."""
        return self.path(name + ".sock")

    def start_server(self, name, service="", **config):
        """Starts the daemon of one service on server `name` (see `server_config`)."""
        stem = service + name
        cfg = self.path(f"{stem}.toml")
        with open(cfg, "w") as f:
            f.write(self.server_config(name, service, **config))
        if os.path.exists(self.path(f"{stem}.prom")):
            os.unlink(self.path(f"{stem}.prom"))
        self.spawn(stem, name, [self.bin("manycast-server"), "--config", cfg],
                   env={"RUST_LOG": "info"})

    def start_servers(self):
        for name in self.ids:
            self.start_server(name)

    def agreed_epoch(self):
        """The one epoch all running servers have committed with slices, or None."""
        epochs = set()
        for s in self.running_servers():
            m = self.server_metrics(s)
            if not m.get("slices"):
                return None
            epochs.add(int(m.get("epoch", 0)))
        return epochs.pop() if len(epochs) == 1 else None

    def converged(self):
        """(epoch, status) once every running server agrees on one epoch, their slices cover
        the address space, and the verifier holds exactly their claims at that epoch."""
        self.check_processes()
        epoch = self.agreed_epoch()
        if epoch is None:
            return None
        running = self.running_servers()
        if sum(self.server_metrics(s).get("slice_addresses", 0) for s in running) != 1 << 32:
            return None
        st = self.verifier_status()
        if st is None:
            return None
        want = {self.ids[s] for s in running}
        for group in (GROUP, GROUP6) if self.dual_stack else (GROUP,):
            rows = [r for r in st["ownership"] if r["group"] == group]
            if {r["member"] for r in rows} != want or any(r["epoch"] != epoch for r in rows):
                return None
        return epoch, st

    def wait_converged(self, timeout=30):
        return wait_for("the servers to agree on one epoch and the verifier to hold their claims",
                        self.converged, timeout=timeout)

    def publish6(self):
        """GROUP6's record (dual stack): its own name, as a dual-stack service publishes one
        record per family (SPEC.md §8.1)."""
        if self.dual_stack:
            Cluster.publish(self, group=GROUP6, name="demo6")

    def up(self):
        self.start_net()
        self.make_keys()
        self.start_keystore()
        self.publish()
        self.publish6()
        self.start_verifier()
        self.start_servers()
        return self.wait_converged()

    # -- teardown ----------------------------------------------------------------------------

    def stop(self):
        for name, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for name, p in self.procs.items():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        if os.path.exists(PID_FILE):
            os.unlink(PID_FILE)
        if self.net is not None:
            self.net.stop()
            self.net = None
        self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
