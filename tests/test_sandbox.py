"""The sandbox's limits and faults, each followed by a check that the session still works.

These run a real ipykernel through the same launcher users get. As root (CI) every limit is enforced by
cgroups and a network namespace; elsewhere the tests check what `Isolation` says is enforced."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import loopback_listener

from cascade_lab.sandbox import ExecResult, Isolation, PythonSandbox, SandboxError, scrub_env

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def sb():
    os.environ["CASCADE_TEST_API_TOKEN"] = "tok-should-not-leak"
    os.environ["CASCADE_TEST_SECRET"] = "secret-should-not-leak"
    s = PythonSandbox(timeout=20, memory_mb=768, max_processes=64, interrupt_grace=2)
    s.start()
    yield s
    s.close()
    for k in ("CASCADE_TEST_API_TOKEN", "CASCADE_TEST_SECRET"): os.environ.pop(k, None)


def healthy(sb):
    "The session answers, handles a large output, and can start a process."
    r = sb.run("print(6 * 7)")
    assert (r.output, r.error) == ("42", None), r
    r = sb.run("print('z' * 1_000_000)")
    assert r.output == "z" * sb.max_output_chars + "<output cut>" and r.truncated, r.output[-200:]
    r = sb.run("import subprocess; print(subprocess.run(['echo', 'child ok'], capture_output=True, text=True).stdout)")
    assert r.output == "child ok", r


def kernel_processes(sb):
    "The kernel's init (pid 1 of its namespace) and the kernel itself: what its cgroups hold when nothing else runs."
    import psutil
    init = psutil.Process(sb.kernel_pid).children()[0]
    return {init.pid} | {c.pid for c in init.children() if "ipykernel" in " ".join(c.cmdline())}


def enforced(sb, what):
    return not getattr(sb.isolation, what).startswith(("NOT", "rlimit RLIMIT_NPROC")) or pytest.skip(f"{what}: {getattr(sb.isolation, what)}")


def test_isolation_is_reported(sb):
    iso = sb.isolation
    assert isinstance(iso, Isolation) and str(iso) in repr(sb)
    r = sb.run("1")
    assert r.isolation == str(iso) and str(iso) in repr(r)
    if os.getuid() == 0 and os.path.isdir("/sys/fs/cgroup"):
        assert iso.complete, f"as root every limit should be enforced here: {iso}"


def test_infinite_loop_is_interrupted_and_state_kept(sb):
    sb.run("keep = 'still here'")
    r = sb.run("while True: pass", timeout=1)
    assert r.timed_out and not r.restarted and r.output == "Execution timed out after 1 seconds"
    assert 1 <= r.duration_s < 10          # interrupted, not restarted (that would show in r.restarted)
    assert sb.run("print(keep)").output == "still here"
    healthy(sb)


def test_loop_ignoring_sigint_restarts(sb):
    sb.run("keep = 1")
    code = "import signal\nsignal.signal(signal.SIGINT, lambda *a: None)\nwhile True: pass"
    r = sb.run(code, timeout=1)
    assert r.timed_out and r.restarted and r.output == "Execution timed out after 1 seconds"     # the harness's words
    assert sb.run("keep").error == "NameError: name 'keep' is not defined"
    healthy(sb)


def test_restart_on_timeout_mimics_the_harness():
    with PythonSandbox(timeout=1, restart_on_timeout=True) as s:
        s.run("v = 3")
        r = s.run("import time; time.sleep(10)")
        assert r.timed_out and r.restarted and r.output.startswith("Execution timed out after 1 seconds")
        assert s.run("v").error.startswith("NameError")


@pytest.mark.parametrize("code,cause", [
    ("import os; os._exit(3)", "it exited with status 3"),
    ("import ctypes; ctypes.string_at(0)", "it was killed by SIGSEGV (a crash in native code)"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "it was killed by SIGKILL"),
])
def test_dying_kernel_is_reported_and_replaced(sb, code, cause):
    pid = sb.kernel_pid
    r = sb.run(code)
    assert r.restarted and r.error == f"the Python process died: {cause}" and "state was lost" in r.output
    assert sb.kernel_pid != pid
    healthy(sb)


def test_memory_bomb_kills_only_the_kernel(sb):
    enforced(sb, "memory")
    host_pid = os.getpid()
    r = sb.run("blocks = []\nwhile True: blocks.append(b'x' * (64 << 20))")
    assert os.getpid() == host_pid
    assert r.error is not None and (r.restarted or r.error.startswith("MemoryError")), r
    if r.restarted: assert "out of memory (limit 768 MB)" in r.error, r.error
    healthy(sb)


def test_one_large_allocation(sb):
    enforced(sb, "memory")
    r = sb.run("x = bytearray(2 << 30); x[::4096] = b'y' * len(x[::4096])")
    assert r.error is not None, r
    healthy(sb)


def test_spawn_flood_is_refused_and_cleaned_up(sb):
    enforced(sb, "processes")
    code = ("import subprocess\nps = []\ntry:\n    for i in range(500): ps.append(subprocess.Popen(['sleep', '60']))\n"
            "except OSError as e: print('refused after', len(ps))")
    r = sb.run(code)
    assert r.output.startswith("refused after ") and int(r.output.split()[2].rstrip("\n")) < 64, r.output
    assert "Starting more processes was refused (limit: 64 tasks)" in r.output
    assert sb._res.cgroups.pids_inside() == kernel_processes(sb)     # the sleeps were stopped
    healthy(sb)


def test_fork_bomb(sb):
    enforced(sb, "processes")
    r = sb.run("import os\nwhile True:\n    if os.fork() == 0:\n        while True: pass", timeout=5)
    assert r.error is not None, r
    assert sb._res.cgroups.pids_inside() <= kernel_processes(sb)
    healthy(sb)


def test_megabytes_of_output(sb):
    t = time.perf_counter()
    r = sb.run("for i in range(300_000): print(i)")
    assert r.truncated and r.output.startswith("0\n1\n2\n") and r.output.endswith("<output cut>")
    assert len(r.output) == sb.max_output_chars + len("<output cut>")
    assert time.perf_counter() - t < 30
    r = sb.run("print('x' * 30_000_000)")
    assert r.truncated and len(r.output) == sb.max_output_chars + len("<output cut>")
    healthy(sb)


def test_invalid_utf8_on_stdout(sb):
    r = sb.run("import os, sys\nos.write(1, b'bad \\xff\\xfe bytes\\n')\nsys.stdout.buffer.write(b'\\xc3\\x28 more\\n') if hasattr(sys.stdout, 'buffer') else None\npass")
    assert "bad" in r.output and "\ufffd" in r.output, repr(r.output)
    r.output.encode("utf-8")        # representable: no lone surrogates reach the model
    healthy(sb)


def test_environment_is_scrubbed(sb):
    r = sb.run("import os\nprint(sorted(k for k in os.environ if 'CASCADE_TEST' in k), os.environ['HOME'] == os.getcwd())")
    assert r.output == "[] True", r.output
    assert "CASCADE_TEST_API_TOKEN" in sb.isolation.env_removed
    r = sb.run("import os; print([v for v in os.environ.values() if 'should-not-leak' in v])")
    assert r.output == "[]"


def test_network_is_cut(sb):
    if sb.isolation.network.startswith("NOT"): pytest.skip(sb.isolation.network)
    srv = loopback_listener()
    port = srv.getsockname()[1]
    try:
        # Nothing outside loopback is ever addressed: the host's 127.0.0.1 is out of reach, and the namespace's own
        # facts say there is no way out at all (no interface but lo, no route).
        code = (f"import socket\ntry: socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')\n"
                "except OSError as e: print('no', e.errno)\n"
                "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]))\n"
                "print(len(open('/proc/net/route').read().splitlines()) - 1, 'routes')")
        r = sb.run(code)
        lines = r.output.splitlines()
        assert len(lines) == 3 and lines[0].startswith("no ") and lines[1:] == ["['lo']", "0 routes"], r.output
        srv.setblocking(False)
        with pytest.raises(BlockingIOError): srv.accept()        # nothing reached the host's listener
        r = sb.run("import socket\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
                   "c = socket.create_connection(s.getsockname()); print('own loopback works')")
        assert r.output == "own loopback works", r.output
    finally:
        srv.close()
    healthy(sb)


def test_network_allowed_when_asked():
    srv = loopback_listener()
    try:
        with PythonSandbox(network=True) as s:
            assert s.isolation.network.startswith("allowed")
            r = s.run(f"import socket; socket.create_connection(('127.0.0.1', {srv.getsockname()[1]})); print('ok')")
            assert r.output == "ok", r.output
    finally:
        srv.close()


def test_close_leaves_nothing_behind():
    import psutil
    s = PythonSandbox()
    s.run("import subprocess; p = subprocess.Popen(['sleep', '60'])")
    pid, dirs = s.kernel_pid, list(s._res.dirs)
    kids = [c.pid for c in psutil.Process(pid).children(recursive=True)]
    assert kids
    s.close()
    time.sleep(0.2)
    for p in [pid] + kids:
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    assert not any(os.path.exists(d) for d in dirs)
    assert not any(d in line for d in dirs for line in open("/proc/self/mountinfo"))    # the socket tmpfs is unmounted too
    assert not [c for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE]
    with pytest.raises(SandboxError, match="closed"): s.run("1")
    s.close()   # idempotent


def test_interpreter_exit_leaves_nothing_behind(tmp_path):
    import subprocess, sys
    script = ("import psutil\nfrom cascade_lab.sandbox import PythonSandbox\ns = PythonSandbox()\ns.run('1')\n"
              "print(*[p.pid for p in psutil.Process(s.kernel_pid).children(recursive=True)], s.kernel_pid, s.run_dir, flush=True)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    *pids, run_dir = out.stdout.split()
    assert len(pids) == 3               # the supervisor, the namespace's init, the kernel
    def running(pid):           # gone, or a zombie waiting for the machine's init to reap it
        try: return ") Z" not in open(f"/proc/{pid}/stat").read()
        except OSError: return False
    for _ in range(50):
        if not any(running(p) for p in pids): break
        time.sleep(0.1)
    assert not any(running(p) for p in pids) and not os.path.exists(run_dir)


def test_user_workdir_is_kept(tmp_path):
    with PythonSandbox(workdir=tmp_path) as s:
        r = s.run("open('result.txt', 'w').write('kept'); import os; print(os.path.samefile(os.getcwd(), os.environ['HOME']))")
        assert r.output == "True", r
    assert (tmp_path / "result.txt").read_text() == "kept"
    assert (tmp_path / "result.txt").stat().st_uid == os.getuid() and tmp_path.stat().st_uid == os.getuid()   # given back


@pytest.mark.parametrize("kwargs,match", [
    (dict(timeout=0), "timeout must be a positive number"),
    (dict(timeout="10"), "timeout must be a positive number"),
    (dict(memory_mb=-1), "memory_mb must be a positive number or None"),
    (dict(max_output_chars=-5), "max_output_chars must be an integer >= 0"),
    (dict(workdir="/definitely/not/here"), "is not a directory"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(SandboxError, match=match): PythonSandbox(**kwargs)


def test_bad_run_arguments(sb):
    with pytest.raises(SandboxError, match="code must be a str"): sb.run(b"print(1)")
    with pytest.raises(SandboxError, match="timeout must be a positive number"): sb.run("1", timeout=-1)


def test_stdin_is_refused(sb):
    r = sb.run("input('name? ')")
    assert r.error is not None and "StdinNotImplementedError" in r.error
    healthy(sb)


def test_kernel_killed_between_calls(sb):
    sb.run("v = 1")
    os.kill(sb.kernel_pid, 9)
    time.sleep(0.3)
    r = sb.run("print('fresh')")
    assert r.restarted and r.output.startswith("The Python session had stopped") and r.output.endswith("fresh")


def test_exec_result_to_dict():
    r = ExecResult("out", images=[{"mime": "image/png", "data": b"\x89PNG"}])
    d = r.to_dict()
    assert d["images"] == [{"mime": "image/png", "data": "iVBORw=="}] and d["output"] == "out" and d["error"] is None


def test_scrub_env_cloud_credentials():
    env = {"AWS_SECRET_ACCESS_KEY": "a", "AWS_ACCESS_KEY_ID": "b", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
           "AZURE_CLIENT_SECRET": "c", "GITHUB_TOKEN": "d", "PATH": "/usr/bin", "HOME": "/root"}
    clean, removed = scrub_env(env)
    assert clean == {"PATH": "/usr/bin", "HOME": "/root"} and len(removed) == 5


def test_without_cgroups_rlimits_stand_in_and_say_so(monkeypatch):
    """Where no cgroup can be used (a non-root user, a container without delegation), memory falls back to
    RLIMIT_AS and processes to RLIMIT_NPROC (as root it binds because the kernel runs as a uid of its own);
    the isolation report says which, and a flood is still refused."""
    import cascade_lab.isolation as isom
    monkeypatch.setattr(isom, "_cgroup_mounts", lambda: {})
    s = PythonSandbox(memory_mb=1024, max_processes=64).start()
    try:
        iso = s.isolation
        assert iso.memory.startswith("rlimit RLIMIT_AS, 1024 MB") and "no memory cgroup is mounted" in iso.memory
        assert iso.processes.startswith("rlimit RLIMIT_NPROC"), iso.processes
        r = s.run("x = b'x' * (2 << 30)")
        assert r.error.startswith("MemoryError") and not r.restarted, r      # refused inside; the kernel lives
        r = s.run("import subprocess\nps = []\ntry:\n    for i in range(300): ps.append(subprocess.Popen(['sleep', '30']))\n"
                  "except OSError: print(len(ps))\nfor p in ps: p.kill(); p.wait()")
        assert int(r.output) < 64, r
        assert s.run("print('still here')").output == "still here"
    finally:
        s.close()


def test_what_is_not_enforced_is_said_and_warned(monkeypatch):
    "A kernel that stays root without a pids cgroup: the report and a warning say what that leaves open."
    if os.getuid() != 0: pytest.skip("needs root")
    import cascade_lab.isolation as isom
    import cascade_lab.sandbox as sbm
    monkeypatch.setattr(isom, "_cgroup_mounts", lambda: {})
    monkeypatch.setattr(isom, "_fresh_id", lambda: None)           # no uid of its own: it stays root
    monkeypatch.setattr(sbm, "_warned", set())
    with pytest.warns(RuntimeWarning) as caught:
        s = PythonSandbox().start()
    try:
        said = [str(w.message) for w in caught]
        assert any("processes is NOT enforced" in m for m in said) and any("user is NOT dropped" in m for m in said), said
        iso = s.isolation
        assert iso.user.startswith("NOT dropped") and iso.processes.startswith("NOT enforced") and not iso.complete
        assert "NOT enforced" in s.run("1").isolation
    finally:
        s.close()


def test_limits_can_be_switched_off():
    with PythonSandbox(memory_mb=None, max_processes=None) as s:
        assert s.isolation.memory.startswith("not limited") and s.isolation.processes.startswith("not limited")
        assert s.run("print(2 + 2)").output == "4"


def test_works_inside_a_jupyter_kernel():
    """The workbench lives in Jupyter: a sandbox made inside a real ipykernel (whose main thread runs an asyncio
    loop) must start, run, time out and close there too."""
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3")
    out = []
    try:
        code = ("from cascade_lab.sandbox import PythonSandbox\nsb = PythonSandbox(timeout=5)\n"
                "r = sb.run('x = 41\\nprint(x + 1)')\nprint('inner:', r.output)\n"
                "r = sb.run('while True: pass', timeout=1)\nprint('timed out:', r.timed_out, r.restarted)\n"
                "print('after:', sb.run('print(x)').output)\nsb.close()")
        code = "import warnings\nwarnings.simplefilter('ignore')\n" + code      # what is not enforced here is not this test's point
        reply = kc.execute_interactive(code, timeout=120, output_hook=lambda m: out.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "".join(out) == "inner: 42\ntimed out: True False\nafter: 41\n"


def _nobody_can_run_this_checkout():
    import pwd, site
    if os.getuid() != 0: return "needs root to switch to the user nobody"
    try: pwd.getpwnam("nobody")
    except KeyError: return "no user nobody"
    py = "/usr/bin/python3.%d" % sys.version_info[1]
    if not os.access(py, os.X_OK): return f"no system {py} (the venv's interpreter may be unreadable for nobody)"
    import cascade_lab
    paths = [os.path.dirname(os.path.dirname(cascade_lab.__file__))] + site.getsitepackages()
    r = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", " && ".join(f"test -r {p}" for p in paths)])
    if r.returncode: return "the checkout or its packages are not readable by nobody"
    return None


def test_non_root_user_gets_namespaces_and_rlimits():
    """As an unprivileged user (no cgroups, RLIMIT_NPROC binds, no CAP_SYS_ADMIN): the network goes through a user +
    network namespace, memory and processes through rlimits, and the report says so. Run for real as `nobody`
    with the system interpreter of the same minor version and this checkout's packages."""
    why = _nobody_can_run_this_checkout()
    if why: pytest.skip(why)
    import cascade_lab, shutil, site, tempfile
    from pathlib import Path
    where = Path(tempfile.mkdtemp(prefix="cascade-nonroot-"))        # pytest's own tmp_path is private to root
    home = where / "home"                                            # nobody's home for the run, with a "credential"
    home.mkdir()
    (home / ".netrc").write_text("machine example.com password hunter2")
    shutil.chown(home, "nobody"); shutil.chown(home / ".netrc", "nobody")
    script = where / "nonroot.py"
    srv = loopback_listener()                 # a listener on the host's loopback: the kernel must not reach it
    net_code = (f"import socket\ntry: socket.create_connection(('127.0.0.1', {srv.getsockname()[1]}), timeout=2); print('connected')\n"
                "except OSError as e: print(e.errno)\n"
                "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]))\n"
                "print(len(open('/proc/net/route').read().splitlines()) - 1)")
    script.write_text(
        "import json\nfrom cascade_lab.sandbox import PythonSandbox\n"
        "with PythonSandbox(memory_mb=768, max_processes=64, timeout=20) as sb:\n"
        "    out = {'isolation': vars(sb.isolation) | {'env_removed': list(sb.isolation.env_removed)},\n"
        "           'uid': sb.run('import os; print(os.getuid())').output,\n"
        "           'bomb': sb.run(\"x = b'x' * (2 << 30)\").error,\n"
        f"           'net': sb.run({net_code!r}).output,\n"
        "           'flood': sb.run(\"import subprocess\\nps = []\\ntry:\\n    for i in range(500): ps.append(subprocess.Popen(['sleep', '30']))\\nexcept OSError: print(len(ps))\").output,\n"
        "           'after': sb.run('print(1)').output, 'nice': sb.run('import os; print(os.nice(0))').output,\n"
        f"           'netrc': sb.run(\"import os; print(os.path.exists({str(home / '.netrc')!r}))\").output}}\n"
        "print(json.dumps(out))\n")
    os.chmod(where, 0o755); os.chmod(script, 0o644)
    pypath = ":".join([os.path.dirname(os.path.dirname(cascade_lab.__file__))] + site.getsitepackages())
    py = "/usr/bin/python3.%d" % sys.version_info[1]
    try:
        r = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", f"cd /tmp && HOME={home} PYTHONPATH={pypath} {py} {script}"],
                           capture_output=True, text=True, timeout=240)
    finally:
        srv.close()
        shutil.rmtree(where, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    iso = out["isolation"]
    assert out["uid"] == "65534"
    assert iso["network"] == "own user + network namespace (loopback only)"
    assert out["net"].splitlines() == ["111", "['lo']", "0"], out["net"]      # ECONNREFUSED: the host's listener is not there
    assert iso["memory"].startswith("rlimit RLIMIT_AS, 768 MB") and out["bomb"].startswith("MemoryError")
    assert iso["processes"].startswith("rlimit RLIMIT_NPROC") and int(out["flood"]) < 200
    assert out["after"] == "1"
    assert iso["cpu"].startswith("NOT limited") and "nice 19" in iso["cpu"] and out["nice"] == "19", (iso["cpu"], out["nice"])
    assert iso["home"].startswith("hidden") and str(home) in iso["home"] and out["netrc"] == "False", (iso["home"], out)
    assert iso["user"].startswith("this user (not root")


def test_sandboxes_starting_together_keep_their_limits():
    """Groups left by dead processes are swept when a sandbox starts; a live sandbox's groups (empty while its
    kernel starts or restarts) never are."""
    import threading
    a = PythonSandbox(memory_mb=512, timeout=20)
    a.start()
    enforced(a, "memory")
    if not a.isolation.complete: a.close(); pytest.skip(f"this machine does not enforce every limit: {a.isolation}")
    bad = []
    def start_one():
        with PythonSandbox() as s:
            if not s.isolation.complete: bad.append(str(s.isolation))
    os.kill(a.kernel_pid, 9)                      # a's groups are empty now, as during any restart
    threads = [threading.Thread(target=start_one) for _ in range(3)]
    for t in threads: t.start()
    for t in threads: t.join()
    try:
        assert not bad, bad
        r = a.run("x = bytearray(900 << 20); x[::4096] = b'y' * len(x[::4096]); print('allocated')")
        assert r.restarted and "out of memory (limit 512 MB)" in r.output, r
        assert a.isolation.complete
    finally:
        a.close()


def test_code_deleting_its_working_directory(sb):
    r = sb.run("import os, shutil; shutil.rmtree(os.getcwd())")
    assert r.error is None
    r = sb.run("import os; os._exit(1)")
    assert r.restarted
    r = sb.run("import os; print(os.getcwd(), os.path.isdir(os.getcwd()), os.listdir('.'))")
    assert r.output == f"{sb.workdir} True []"          # a fresh, empty one


def test_exit_does_not_end_the_session(sb):
    sb.run("kept = 5")
    for code in ("exit()", "quit()", "import sys; sys.exit(0)", "import sys; sys.exit()"):
        r = sb.run(code)
        assert r.error is None and r.output == "", (code, r)
    time.sleep(0.5)
    r = sb.run("print(kept)")
    assert (r.output, r.restarted) == ("5", False)
    r = sb.run("import sys; sys.exit(3)")
    assert r.error == "SystemExit: 3" and not r.restarted


def test_lone_surrogates_reach_the_model_as_text(sb):
    r = sb.run("raise ValueError('bad \\ud800 value')")
    assert r.error == "ValueError: bad ? value" and r.output.endswith("ValueError: bad ? value"), r
    r = sb.run("print('x \\udcff y')")
    assert r.output == "x ? y" and r.error is None, r
    r.output.encode("utf-8")
    healthy(sb)


def test_output_flood_from_python_is_capped_in_the_kernel(sb):
    r = sb.run("import sys\nwhile True: sys.stdout.write('y' * 100_000)", timeout=2)
    assert r.timed_out and not r.restarted, r
    assert r.output == "Execution timed out after 2 seconds"        # the harness sends no partial output
    healthy(sb)


def test_on_output_streams_chunks_while_the_code_runs(sb):
    """`on_output` gets stdout and stderr chunks as the kernel sends them, in the thread that called `run`, before
    `run` returns; together they hold every line printed; the result is the one `run` gives without it."""
    import threading
    code = ("import sys, time\nfor i in range(4):\n    print('line', i, flush=True)\n"
            "    if i == 2: print('warn', i, file=sys.stderr, flush=True)\n    time.sleep(0.4)")
    got, threads = [], set()
    def follow(text):
        got.append((time.perf_counter(), text))
        threads.add(threading.get_ident())
    r = sb.run(code, on_output=follow)
    returned = time.perf_counter()
    assert threads == {threading.get_ident()}
    text = "".join(t for _, t in got)
    for line in ("line 0", "line 1", "line 2", "line 3", "warn 2"): assert f"{line}\n" in text, text
    first = next(at for at, t in got if "line 0" in t)
    assert returned - first > 1.0, f"the first chunk came {returned - first:.2f} s before run returned"
    plain = sb.run(code)
    assert (r.output, r.error, r.truncated) == (plain.output, plain.error, plain.truncated) == \
        ("line 0\nline 1\nline 2\nline 3\nwarn 2", None, False)


def test_on_output_sees_a_timed_out_call_and_can_stop_one(sb):
    "A call that times out streams what it printed (its result says only that it timed out); a callback that raises stops the call."
    got = []
    r = sb.run("import time\nprint('before', flush=True)\ntime.sleep(30)", timeout=1, on_output=got.append)
    assert r.timed_out and r.output == "Execution timed out after 1 seconds" and "".join(got) == "before\n", (r, got)
    def stop(text): raise RuntimeError("viewer closed")
    t = time.perf_counter()
    with pytest.raises(RuntimeError, match="viewer closed"):
        sb.run("import time\nprint('a', flush=True)\ntime.sleep(30)", on_output=stop)
    assert time.perf_counter() - t < 10
    with pytest.raises(SandboxError, match="on_output must be callable"): sb.run("1", on_output="print")
    healthy(sb)


def test_host_interrupt_stops_the_code_too(sb):
    import _thread, signal, threading
    # Ctrl-C as Jupyter's kernel has it: Python's own SIGINT handler. A process started as a background job of a
    # non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, and `interrupt_main` then does nothing.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(1.0, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            sb.run("import time; time.sleep(8); print('should not finish')")
    finally: signal.signal(signal.SIGINT, inherited)
    t = time.perf_counter()
    r = sb.run("print('new')", timeout=5)
    assert (r.output, r.timed_out, r.error) == ("new", False, None) and time.perf_counter() - t < 4.5, r


def test_images_as_results_are_not_sent_as_text(sb):
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    r = sb.run(f"from IPython.display import Image\nimport base64\nImage(data=base64.b64decode('{png}'))")
    assert r.output == "" and len(r.images) == 1 and r.images[0]["data"].startswith(b"\x89PNG")


def test_the_kernel_cannot_reach_the_researchers_process_or_home(sb):
    """As root the kernel runs as a uid of its own with no capabilities, and the home directory is a tmpfs
    holding only the interpreter: the parent's environment (where the secrets are), its signals, the cgroups
    and files in the home directory are all out of reach."""
    if not sb.isolation.user.startswith("uid "): pytest.skip(f"user: {sb.isolation.user}")
    probe = os.path.join(os.path.expanduser("~"), ".cascade-test-credentials")
    with open(probe, "w") as f: f.write("top secret")
    try:
        me = os.getpid()                  # the researcher's process, by its pid outside the kernel's pid namespace
        code = (f"import os\nfor what, f in [('environ', lambda: open('/proc/{me}/environ').read()),\n"
                f"    ('signal', lambda: os.kill({me}, 0)),\n"
                f"    ('cgroup', lambda: open('/sys/fs/cgroup/pids/cgroup.procs', 'w').write(str(os.getpid()))),\n"
                f"    ('home file', lambda: open({probe!r}).read())]:\n"
                "    try: f(); print(what, 'REACHED')\n"
                "    except OSError as e: print(what, type(e).__name__)\n"
                "print('caps', open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
        r = sb.run(code)
        assert "REACHED" not in r.output, r.output
        assert r.output.splitlines()[-1] == "caps 0000000000000000", r.output
        assert sb.isolation.home.startswith("hidden") and sb.isolation.complete
    finally:
        os.remove(probe)


# What NeMo-Skills' Python tool (IPython in "Plain" traceback mode) sends back, situation by situation: the text the
# model met in training and evaluation.
HARNESS_TEXTS = [
    ("print", "print('hello')", "hello"),
    ("value", "6 * 7", "42"),
    ("string value", "'abc'", "'abc'"),
    ("print, then a value of several lines", "import numpy as np\nprint('a')\nnp.eye(2)",
     "a\n\narray([[1., 0.],\n       [0., 1.]])"),
    ("a value of several lines alone", "import numpy as np\nnp.eye(2)", "array([[1., 0.],\n       [0., 1.]])"),
    ("values and prints in order", "1 + 1\nprint('p')\n2 + 2", "p\n4"),
    ("traceback", "def f(a):\n    return a / 0\n\nf(1)",
     "Traceback (most recent call last):\n    f(1)\n    return a / 0\nZeroDivisionError: division by zero"),
    ("print, then an error", "print('before')\nundefined_name",
     "before\nTraceback (most recent call last):\n    undefined_name\nNameError: name 'undefined_name' is not defined"),
    ("syntax error", "x = (", "    x = (\n         ^\nSyntaxError: incomplete input"),
    ("error from a library", "import math\nmath.sqrt(-1)",
     "Traceback (most recent call last):\n    math.sqrt(-1)\nValueError: math domain error"),
    ("stdout first, then stderr", "import sys\nsys.stderr.write('E\\n')\nprint('O')", "O\nE"),
    ("leading blank lines and trailing spaces", "print('\\n\\n  x  \\n\\n')", "  x"),      # the indent stays
    ("colours", "print('\\x1b[31mred\\x1b[0m')", "red"),
    ("an Out prompt printed", "print('Out[3]: 7')", "7"),
    ("nothing", "x = 1", ""),
    ("exit code of SystemExit", "raise SystemExit(3)",
     "An exception has occurred, use %tb to see the full traceback.\nSystemExit: 3"),
]


@pytest.mark.parametrize("what,code,text", HARNESS_TEXTS, ids=[c[0] for c in HARNESS_TEXTS])
def test_tool_response_texts_match_the_harness(sb, what, code, text):
    r = sb.run(code)
    assert r.output == text, (what, r.output)


def test_harness_texts_for_warnings_truncation_and_timeouts(sb):
    import re
    r = sb.run("import warnings\nwarnings.warn('careful')\nprint('after')")
    assert re.fullmatch(r"after\n<ipython-input-\d+-[0-9a-f]+>:2: UserWarning: careful\n  warnings.warn\('careful'\)", r.output), r.output
    r = sb.run("import sys\nprint('x' * 1500)\nprint('y' * 1200, file=sys.stderr)")
    assert r.output == "x" * 1000 + "<output cut>" + "y" * 1000 + "<output cut>" and r.truncated    # each stream cut, no newline between
    r = sb.run("print('started', flush=True)\nimport time\ntime.sleep(30)", timeout=1)
    assert r.output == "Execution timed out after 1 seconds" and r.timed_out and not r.restarted      # no partial output
    r = sb.run("def g():\n    raise KeyError('k')\ng()")
    assert r.output == "Traceback (most recent call last):\n    g()\n    raise KeyError('k')\nKeyError: 'k'"
    assert r.traceback.startswith("-" * 20) and "Cell In[" in r.traceback and "----> 3 g()" in r.traceback   # Jupyter's, for viewers
