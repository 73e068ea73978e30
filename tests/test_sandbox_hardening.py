"""The attack as a test: each test below is something the model's (untrusted) code could try against the sandbox
or the researcher's machine, followed by checks of what must still hold afterwards.

Rules these tests keep: they run as root where the defence needs it (skipped with a reason otherwise); every
target is a decoy made here (root-owned directories and files under a temporary directory), never a real system
path; nothing is addressed outside 127.0.0.1; every test is bounded in time and size and cleans up after itself.
"""
import errno
import json
import os
import platform
import select
import shutil
import signal
import site
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import loopback_listener

import cascade_lab
import cascade_lab.isolation as isom
from cascade_lab.sandbox import PythonSandbox, SandboxError

ROOT = os.getuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: the kernel drops to a uid of its own only when started by root")
OTHER_UID = 12345                        # "the researcher" owning a given workdir
RSS_SLACK_MB = 60                        # how much a call may grow this (the researcher's) process


# -- helpers -------------------------------------------------------------------------------------------------------
@pytest.fixture
def make_sb():
    "Make sandboxes that are closed when the test ends, whatever happens in it."
    made = []
    def make(**kw):
        kw.setdefault("timeout", 30)
        s = PythonSandbox(**kw)
        made.append(s)
        return s
    yield make
    for s in made:
        try: s.close()
        except Exception: pass


@pytest.fixture
def tmp_root():
    "A root-owned scratch directory under the temporary directory, traversable (0755) so an escape would reach it."
    d = tempfile.mkdtemp(prefix="cascade-hardening-")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def visible_scratch():
    """A root-owned 0755 scratch directory OUTSIDE the temporary directories and $HOME, so that the kernel sees it
    (its /tmp, /var/tmp, /dev/shm and home are private): decoys that must be hidden for a reason of their own
    (an environment variable names them, they match a GPU device glob) go here. Falls back to a tmp dir."""
    home = os.path.realpath(os.path.expanduser("~"))
    base = next((b for b in ("/srv", "/mnt", "/opt") if os.path.isdir(b) and os.access(b, os.W_OK)
                 and os.path.commonpath([os.path.realpath(b), home]) != home), None)
    d = tempfile.mkdtemp(prefix="cascade-hardening-", dir=base)
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def make_decoy(parent: Path, name: str = "decoy"):
    "A root-owned 0755 directory holding a root-owned 0644 file with unique content: (dir, file, content)."
    d = parent / name
    d.mkdir()
    os.chmod(d, 0o755)
    f = d / "precious.txt"
    content = f"decoy {uuid.uuid4().hex}"
    f.write_text(content)
    os.chmod(f, 0o644)
    if ROOT:
        os.chown(d, 0, 0); os.chown(f, 0, 0)
    return d, f, content


def assert_untouched(d: Path, f: Path, content: str) -> None:
    "The decoy is still a root-owned directory holding its root-owned file, content unchanged."
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode), f"{d} is no longer a directory"
    assert (st.st_uid, st.st_gid) == (0, 0), f"decoy directory {d} is now owned by uid {st.st_uid} gid {st.st_gid}"
    assert stat.S_IMODE(st.st_mode) == 0o755, f"decoy directory mode is now {oct(stat.S_IMODE(st.st_mode))}"
    st = os.lstat(f)
    assert (st.st_uid, st.st_gid) == (0, 0), f"decoy file {f} is now owned by uid {st.st_uid} gid {st.st_gid}"
    assert f.read_text() == content, f"decoy file {f} was rewritten: {f.read_text()[:100]!r}"


def kernel_json(sb, code: str, **kw) -> dict:
    "Run `code` (which prints one JSON line) and return what it printed; the call must succeed."
    r = sb.run(code, **kw)
    assert r.error is None, r
    return json.loads(r.output.splitlines()[-1])


def _vmhwm() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"): return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """This process's peak resident memory during a block: VmHWM after resetting it (clear_refs), and a sampler
    thread as well, so that a spike is seen even where the reset is not allowed."""
    def __enter__(self):
        import gc
        gc.collect()
        self.base = psutil.Process().memory_info().rss
        self.peak = self.base
        try:
            with open("/proc/self/clear_refs", "w") as f: f.write("5")
            self.hwm = True
        except OSError: self.hwm = False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def _sample(self):
        p = psutil.Process()
        while not self._stop.wait(0.005): self.peak = max(self.peak, p.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set(); self._t.join()
        if self.hwm: self.peak = max(self.peak, _vmhwm())

    @property
    def growth_mb(self) -> float: return (self.peak - self.base) / 2**20


def processes_with_arg(arg: str) -> list[int]:
    "Host pids whose argv has `arg` as one whole argument."
    want, out = arg.encode(), []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid(): continue
        try: argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        except OSError: continue
        if want in argv: out.append(int(p))
    return out


def kill_pids(pids) -> None:
    for p in pids:
        try: os.kill(p, signal.SIGKILL)
        except OSError: pass


def child_env() -> dict:
    "This process's environment for a child Python (without pytest's marker, which changes ipykernel's capture)."
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def sandbox_tmp_entries() -> set[str]:
    "Entries of the temporary directory that look like a sandbox's of this process (run dirs, workdirs)."
    mine = (f"cl-sbx-{os.getpid()}-", f"cascade-sandbox-{os.getpid()}-")
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(mine)}


def remove_new_tmp_entries(before: set[str]) -> None:
    "Clean up what a sandbox of this process left in the temporary directory."
    for n in sandbox_tmp_entries() - before:
        p = os.path.join(tempfile.gettempdir(), n)
        if os.path.isdir(p) and not os.path.islink(p): shutil.rmtree(p, ignore_errors=True)
        else:
            try: os.unlink(p)
            except OSError: pass


# -- 1. the working directory as a weapon against root -------------------------------------------------------------
@needs_root
@pytest.mark.timeout(60)
def test_workdir_replaced_by_symlink_to_root_dir(make_sb, tmp_root):
    """Attack: the code deletes its working directory, puts a symlink to a root-owned directory in its place and
    kills the kernel; the restart, run by root, "prepares" the working directory again (chown, chdir) through the
    symlink, handing the root-owned directory to the sandbox's uid, which then rewrites the file in it.
    Defence: the restart works on a fresh working directory and never follows what the kernel left behind;
    the decoy and its file stay root-owned and unchanged."""
    d, f, content = make_decoy(tmp_root)
    sb = make_sb(max_output_chars=5000)
    sb.start()
    try:
        r = sb.run(f"import os, shutil\nwd = os.getcwd()\nos.chdir('/')\nshutil.rmtree(wd)\nos.symlink({str(d)!r}, wd)\nos._exit(0)")
        assert r.restarted, r
        r = sb.run(f"import os\np = {str(f)!r}\ntry:\n    open(p + '.new', 'w').write('pwned')\n    os.replace(p + '.new', p)\n"
                   "    print('replaced')\nexcept OSError as e: print('refused', type(e).__name__)")
        assert r.error is None, r                       # the session works after the restart
        assert_untouched(d, f, content)
        assert "replaced" not in r.output, r.output
    finally:
        wd = sb.workdir
        sb.close()
        if wd and os.path.islink(wd) and os.readlink(wd) == str(d): os.unlink(wd)    # what the old code leaves


@needs_root
@pytest.mark.timeout(60)
def test_links_in_a_given_workdir_do_not_leak_ownership(make_sb, tmp_root):
    """Attack: in a researcher's workdir (owned by uid 12345), the code plants symlinks to a root-owned directory
    and file (also one level down) and tries a hard link to the root-owned file, hoping that handing the
    directory back on close() chowns through them.
    Defence: close() gives the workdir and its regular files back to uid 12345 without following any link;
    the decoy stays root-owned and unchanged."""
    d, f, content = make_decoy(tmp_root)
    wd = tmp_root / "work"
    (wd / "sub").mkdir(parents=True)
    (wd / "data.txt").write_text("research")
    (wd / "sub" / "inner.txt").write_text("more")
    for p in (wd, wd / "sub", wd / "data.txt", wd / "sub" / "inner.txt"): os.chown(p, OTHER_UID, OTHER_UID)
    sb = make_sb(workdir=wd)
    r = sb.run(f"import os\nos.symlink({str(d)!r}, 'link-dir')\nos.symlink({str(f)!r}, 'link-file')\n"
               f"os.mkdir('sub2')\nos.symlink({str(d)!r}, 'sub2/deep-link')\nos.symlink({str(f)!r}, 'sub2/file-link')\n"
               f"try: os.link({str(f)!r}, 'hard'); print('hard link made')\nexcept OSError as e: print('no hard link', e.errno)\n"
               "open('made-by-kernel.txt', 'w').write('k')")
    assert r.error is None, r
    sb.close()
    assert_untouched(d, f, content)
    decoy_inode = os.stat(f).st_ino
    wrong = []
    for root, dirs, files in os.walk(wd):
        for n in [root] + [os.path.join(root, x) for x in dirs + files]:
            st = os.lstat(n)
            if st.st_ino == decoy_inode: continue              # a hard link to the decoy is the decoy
            if st.st_uid != OTHER_UID: wrong.append((n, st.st_uid))
    assert not wrong, f"not given back to uid {OTHER_UID}: {wrong}"
    assert (wd / "data.txt").read_text() == "research" and (wd / "made-by-kernel.txt").read_text() == "k"


@needs_root
@pytest.mark.timeout(60)
def test_given_workdir_swapped_for_symlink(make_sb, tmp_root):
    """Attack: the researcher's workdir lies in a sticky, world-writable directory (like /tmp). While the kernel owns
    it, it may rename it away there and leave a symlink to a root-owned directory at its path; then it kills
    itself, so that the restart's chown and close()'s "give everything back" walk go through the symlink.
    Defence: the kernel cannot move the workdir out from under its path, or nothing follows the symlink: the decoy
    stays root-owned and unchanged, and the researcher's directory and files go back to uid 12345."""
    d, f, content = make_decoy(tmp_root)
    shared = tmp_root / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    wd = shared / "work"
    wd.mkdir()
    (wd / "data.txt").write_text("research")
    os.chown(wd, OTHER_UID, OTHER_UID); os.chown(wd / "data.txt", OTHER_UID, OTHER_UID)
    sb = make_sb(workdir=wd)
    sb.run(f"import os\nwd = os.getcwd()\nos.chdir('/')\nos.rename(wd, wd + '.moved')\nos.symlink({str(d)!r}, wd)\nprint('swapped')")
    sb.run("import os; os._exit(0)")                     # a restart "prepares" the workdir again
    sb.run("print(1)")
    sb.close()
    assert_untouched(d, f, content)
    for place in (wd, Path(str(wd) + ".moved")):          # wherever the researcher's directory is now
        if place.is_dir() and not place.is_symlink():
            assert place.stat().st_uid == OTHER_UID, f"{place} owned by {place.stat().st_uid}"
            assert (place / "data.txt").stat().st_uid == OTHER_UID and (place / "data.txt").read_text() == "research"


# -- 2. a checkout behind a private directory ----------------------------------------------------------------------
_PRIVATE_SCRIPT = """
import json
import cascade_lab
from cascade_lab.sandbox import PythonSandbox
with PythonSandbox(timeout=30) as sb:
    r = sb.run('print(6 * 7)')
    uid = sb.run('import os; print(os.getuid())').output
    print(json.dumps({'pkg': cascade_lab.__file__, 'output': r.output, 'error': r.error, 'uid': uid,
                      'isolation': {k: str(v) for k, v in vars(sb.isolation).items()}}))
"""


def _base_python() -> str:
    sysp = "/usr/bin/python3.%d" % sys.version_info[1]
    return sysp if os.access(sysp, os.X_OK) else getattr(sys, "_base_executable", sys.executable)


def _private_venv(owner_uid: int | None = None) -> Path:
    """D (0700): a venv of the base interpreter whose .pth lists a copy of `cascade_lab` (D/src) and then this
    checkout's site-packages; and the probe script. Owned by `owner_uid` when given."""
    D = Path(tempfile.mkdtemp(prefix="cascade-private-"))
    subprocess.run([_base_python(), "-m", "venv", "--without-pip", str(D / "venv")], check=True, timeout=60,
                   capture_output=True)
    sp = [p for p in (D / "venv").glob("lib/python3*/site-packages") if p.is_dir()]
    assert sp, "the venv has no site-packages"
    shutil.copytree(os.path.dirname(cascade_lab.__file__), D / "src" / "cascade_lab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    ours = [p for p in site.getsitepackages() if os.path.isdir(p)]
    (sp[0] / "cascade-test.pth").write_text("\n".join([str(D / "src"), *ours]) + "\n")
    (D / "probe.py").write_text(_PRIVATE_SCRIPT)
    if owner_uid is not None:
        for root, dirs, files in os.walk(D):
            for n in [root] + [os.path.join(root, x) for x in dirs + files]: os.lchown(n, owner_uid, owner_uid)
    os.chmod(D, 0o700)
    return D


@needs_root
@pytest.mark.timeout(90)
def test_sandbox_from_a_private_directory_as_root():
    """Setup, not an attack: the researcher's interpreter and checkout live in a 0700 root-owned directory (a
    private venv). The kernel, dropped to its own uid, must still start (it needs neither to read that directory
    with its own rights, nor to run as root). Expected: 42, and the kernel runs as a uid of its own."""
    D = _private_venv()
    try:
        env = {k: v for k, v in child_env().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        r = subprocess.run([str(D / "venv" / "bin" / "python"), str(D / "probe.py")], cwd=D, env=env,
                           capture_output=True, text=True, timeout=80)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["pkg"].startswith(str(D / "src")), out["pkg"]       # the copy, not this checkout
        assert (out["output"], out["error"]) == ("42", None), out
        assert out["isolation"]["user"].startswith("uid ") and out["uid"] not in ("0", ""), out
    finally:
        shutil.rmtree(D, ignore_errors=True)


def _nobody_reason() -> str | None:
    import pwd
    if not ROOT: return "needs root to switch to the user nobody"
    try: pwd.getpwnam("nobody")
    except KeyError: return "no user nobody"
    py = "/usr/bin/python3.%d" % sys.version_info[1]
    if not os.access(py, os.X_OK): return f"no system {py} (the venv's own interpreter may be unreadable for nobody)"
    paths = [p for p in site.getsitepackages() if os.path.isdir(p)]
    r = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", " && ".join(f"test -r {p} -a -x {p}" for p in paths)])
    if r.returncode: return f"nobody cannot read this venv's packages ({', '.join(paths)})"
    return None


@pytest.mark.timeout(90)
def test_sandbox_from_a_private_directory_as_nobody():
    """The same private venv, owned by `nobody` and 0700, run as nobody (no root: no uid drop, namespaces and
    rlimits only). Expected: 42, and the kernel runs as nobody itself."""
    why = _nobody_reason()
    if why: pytest.skip(why)
    import pwd
    nobody = pwd.getpwnam("nobody").pw_uid
    D = _private_venv(owner_uid=nobody)
    try:
        env = {k: v for k, v in child_env().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        cmd = f"cd {D} && exec {D}/venv/bin/python {D}/probe.py"
        r = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", cmd], env=env, capture_output=True, text=True, timeout=80)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["pkg"].startswith(str(D / "src")), out["pkg"]
        assert (out["output"], out["error"]) == ("42", None), out
        assert out["uid"] == str(nobody) and out["isolation"]["user"].startswith("this user"), out
    finally:
        shutil.rmtree(D, ignore_errors=True)


# -- 3. disk -------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_disk_is_bounded_wherever_the_kernel_can_write(make_sb):
    """Attack: fill the disk: write 100 MB into the workdir, /tmp, /var/tmp and /dev/shm (as the kernel sees them).
    Defence: with disk_mb=64 each write fails with ENOSPC inside the kernel (all four are one private bounded
    tmpfs), and the session keeps its state and works."""
    sb = make_sb(disk_mb=64, timeout=50, max_output_chars=5000)
    sb.run("kept = 'yes'")
    out = kernel_json(sb, """
import json, os, uuid
res = {}
for d in [os.getcwd(), '/tmp', '/var/tmp', '/dev/shm']:
    p = os.path.join(d, 'fill-' + uuid.uuid4().hex)
    try:
        with open(p, 'wb', buffering=0) as f:
            for _ in range(100): f.write(b'\\1' * (1 << 20))
        res[d] = 'wrote 100 MB'
    except OSError as e: res[d] = e.errno
    finally:
        try: os.remove(p)
        except OSError: pass
print(json.dumps(res))""")
    assert out and all(v == errno.ENOSPC for v in out.values()), out
    r = sb.run("print(kept)")
    assert (r.output, r.error) == ("yes", None), r


@pytest.mark.timeout(60)
def test_kernel_temp_dirs_are_private_and_vanish(make_sb):
    """Attack: leave files in the shared temporary directories (/tmp, /var/tmp, /dev/shm) and the workdir: to fill
    the host's disk, or to pass them to another session. Defence: none of them is on the host, a second sandbox
    running at the same time does not see them, and after close() nothing is left."""
    name = f"cascade-leak-{uuid.uuid4().hex}"
    shared = ["/tmp", "/var/tmp", "/dev/shm"]
    a, b = make_sb(), make_sb()
    a.start(); b.start()
    try:
        r = a.run(f"import os\nfor d in {shared!r} + [os.getcwd()]: open(os.path.join(d, {name!r}), 'w').write('a')\nprint('written')")
        assert r.output == "written", r
        on_host = [d for d in shared + [a.workdir] if os.path.lexists(os.path.join(d, name))]
        assert not on_host, f"the kernel's files are on the host in {on_host}"
        r = b.run(f"import os\nprint([d for d in {shared + [a.workdir]!r} if os.path.lexists(os.path.join(d, {name!r}))])")
        assert r.output == "[]", f"the other sandbox sees them in {r.output}"
        a.close(); b.close()
        left = [d for d in shared + [a.workdir] if os.path.lexists(os.path.join(d, name))]
        assert not left, left
    finally:
        for d in shared:                                   # what the old code leaves on the host
            p = os.path.join(d, name)
            if os.path.lexists(p): os.unlink(p)


@pytest.mark.timeout(60)
def test_inode_flood_is_bounded(make_sb):
    """Attack: create a huge number of empty files (no bytes, so a size limit alone does not stop it: each costs an
    inode, kernel memory). The attempt is capped at 200k files and 20 s in the code itself.
    Defence: with disk_mb=64 it stops early with ENOSPC (inodes are bounded too) and the session works."""
    sb = make_sb(disk_mb=64, timeout=40)
    out = kernel_json(sb, """
import json, os, time
d = os.path.join(os.getcwd(), 'many')
os.mkdir(d)
n, err, end = 0, None, time.monotonic() + 20
try:
    while n < 200_000 and time.monotonic() < end:
        open(os.path.join(d, str(n)), 'w').close(); n += 1
except OSError as e: err = e.errno
print(json.dumps({'files': n, 'errno': err}))""")
    assert out["errno"] == errno.ENOSPC and out["files"] < 200_000, out
    assert sb.run("print('ok')").output == "ok"


# -- 4. the researcher's process memory -----------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_huge_result_value_does_not_swell_the_host(make_sb):
    """Attack: a cell whose last expression is a 200 MB value: its repr travels to the host as one message, which
    the host would decode in full only to cut it to max_output_chars.
    Defence: the host grows by at most ~60 MB and the output is cut."""
    sb = make_sb(timeout=60)
    sb.run("1")
    with PeakRSS() as m:
        r = sb.run("b'x' * 200_000_000")
    assert r.truncated and len(r.output) <= sb.max_output_chars + len("<output cut>"), r.output[-200:]
    assert m.growth_mb <= RSS_SLACK_MB, f"the host process grew by {m.growth_mb:.0f} MB"
    assert sb.run("print('ok')").output == "ok"


@pytest.mark.timeout(90)
def test_image_flood_is_capped(make_sb):
    """Attack: display 20 PNG-looking images of 5 MB each (100 MB the host would keep in `ExecResult.images`).
    Defence: at most ~10 MB of images come back."""
    sb = make_sb(timeout=60)
    r = sb.run("import base64, os\nfrom IPython.display import display\n"
               "b = base64.b64encode(b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(5_000_000)).decode()\n"
               "for i in range(20): display({'image/png': b}, raw=True)")
    total = sum(len(i["data"]) for i in r.images)
    assert total <= 10 * 2**20, f"{len(r.images)} images, {total / 2**20:.0f} MB kept"
    assert sb.run("print('ok')").output == "ok"


@pytest.mark.timeout(90)
def test_huge_exception_message_is_cut(make_sb):
    """Attack: raise an exception whose message is 50 MB (it is in the error's value and again in its traceback).
    Defence: the output and the error both come back cut (the error is a short description), and the host
    process does not swell."""
    sb = make_sb(timeout=60)
    sb.run("1")
    with PeakRSS() as m:
        r = sb.run("raise ValueError('e' * 50_000_000)")
    assert r.error is not None and r.error.startswith("ValueError: eee"), (r.error or "")[:100]
    assert len(r.output) <= sb.max_output_chars + len("<output cut>"), len(r.output)
    assert len(r.error) <= 1000, f"the error is {len(r.error):,} characters"       # a short description
    assert m.growth_mb <= RSS_SLACK_MB, f"the host process grew by {m.growth_mb:.0f} MB"
    assert sb.run("print('ok')").output == "ok"


@pytest.mark.timeout(90)
def test_message_sent_around_the_output_cap(make_sb):
    """Attack: bypass the kernel's output cap by sending a 300 MB stream message straight through the kernel's own
    session and iopub socket. Defence: the host process grows by at most ~60 MB, the call returns within its
    timeout, and the next call works."""
    sb = make_sb(timeout=20)
    sb.run("1")
    t0 = time.monotonic()
    with PeakRSS() as m:
        r = sb.run("k = get_ipython().kernel\n"
                   "k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 'x' * 300_000_000}, parent=k.get_parent())\n"
                   "print('sent')")
    took = time.monotonic() - t0
    assert m.growth_mb <= RSS_SLACK_MB, f"the host process grew by {m.growth_mb:.0f} MB"
    assert took < 20 + 5, f"the call took {took:.0f} s"
    assert len(r.output) <= sb.max_output_chars + len("<output cut>") + 500, len(r.output)
    r = sb.run("print('ok')")
    assert r.output.endswith("ok"), r


# -- 5. CPU --------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_cpu_is_limited(make_sb):
    """Attack: take every core: 4 busy processes for 3 s of wall time each.
    Defence: with the default cpus=1.0, their CPU time adds up to at most 1.3 x 3 s (unlimited it would be ~6 s
    on 2 cores), and `isolation.cpu` says what holds it."""
    if len(os.sched_getaffinity(0)) < 2: pytest.skip("one CPU: a limit of one CPU cannot be told from none")
    sb = make_sb(timeout=40)
    if sb.start().isolation.cpu.startswith("NOT"): pytest.skip(f"cpu: {sb.isolation.cpu}")
    r = sb.run("import subprocess, sys, os, uuid\n"
               "busy = 'import sys, time\\nend = time.time() + 3\\nwhile time.time() < end: pass\\n"
               "open(sys.argv[1], \"w\").write(repr(time.process_time()))'\n"
               "outs = [f'/tmp/cpu-{uuid.uuid4().hex}' for i in range(4)]\n"
               "ps = [subprocess.Popen([sys.executable, '-c', busy, o]) for o in outs]\n"
               "for p in ps: p.wait()\n"
               "total = sum(float(open(o).read()) for o in outs)\n"
               "for o in outs: os.remove(o)\n"
               "print(round(total, 2))")
    assert r.error is None, r
    assert float(r.output) <= 1.3 * 3, f"4 busy processes used {r.output} s of CPU in 3 s"
    cpu = sb.isolation.cpu
    assert not cpu.startswith(("NOT", "not")) and "1" in cpu, cpu


@pytest.mark.timeout(60)
def test_cpu_limit_can_be_switched_off(make_sb):
    "With cpus=None the report says the CPU is not limited (and the kernel works)."
    sb = make_sb(cpus=None)
    assert sb.run("print(1)").output == "1"
    assert sb.isolation.cpu.startswith("not limited"), sb.isolation.cpu


# -- 6. dying with the owner ---------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_kernel_and_daemons_die_with_their_owner(make_sb):
    """Attack: start a detached daemon (its own session) from the kernel, and hope the researcher's process dies
    (SIGKILL: no cleanup runs) so that it lives on, unsupervised. Defence: within 10 s no process with the
    daemon's marker is left on the host, nor the kernel; the dead owner's run dir is removed (at the latest
    when a new sandbox starts)."""
    marker = f"cascade-daemon-{uuid.uuid4().hex}"
    script = (
        "import json, time\nfrom cascade_lab.sandbox import PythonSandbox\n"
        "sb = PythonSandbox(timeout=30)\n"
        "r = sb.run(\"import subprocess, sys\\n\"\n"
        f"          \"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}], start_new_session=True)\\n\"\n"
        "          \"print(p.pid)\")\n"
        "print(json.dumps({'daemon': r.output, 'kernel_pid': sb.kernel_pid, 'run_dir': getattr(sb, 'run_dir', None),\n"
        "                  'workdir': sb.workdir, 'dirs': getattr(getattr(sb, '_res', None), 'dirs', [])}), flush=True)\n"
        "time.sleep(600)\n")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=child_env(), text=True)
    info, kernel_pid = {}, None
    try:
        ready, _, _ = select.select([owner.stdout], [], [], 45)
        assert ready, "the owner did not start its sandbox within 45 s"
        line = owner.stdout.readline()
        assert line, owner.stderr.read()[-2000:]
        info = json.loads(line)
        kernel_pid = info["kernel_pid"]
        assert processes_with_arg(marker), f"the daemon did not start: {info}"
        owner.kill(); owner.wait()
        end = time.monotonic() + 10
        while time.monotonic() < end and (processes_with_arg(marker) or (kernel_pid and psutil.pid_exists(kernel_pid)
                                          and psutil.Process(kernel_pid).status() != psutil.STATUS_ZOMBIE)):
            time.sleep(0.2)
        assert not processes_with_arg(marker), "the daemon outlived its owner"
        assert not (psutil.pid_exists(kernel_pid) and psutil.Process(kernel_pid).status() != psutil.STATUS_ZOMBIE), \
            "the kernel outlived its owner"
        run_dir = info["run_dir"]
        assert run_dir, "the sandbox does not say its run_dir"
        if os.path.exists(run_dir):
            make_sb().start().close()
        assert not os.path.exists(run_dir), f"the dead owner's {run_dir} is still there"
    finally:
        if owner.poll() is None: owner.kill(); owner.wait()
        kill_pids(processes_with_arg(marker))
        if kernel_pid: kill_pids([kernel_pid])
        for d in [info.get("workdir") or "", *info.get("dirs", [])]:      # what the old code leaves in the tmp dir
            if os.path.dirname(d) == tempfile.gettempdir() and \
                    os.path.basename(d).startswith((f"cascade-sandbox-{owner.pid}-", f"cl-sbx-{owner.pid}-")):
                shutil.rmtree(d, ignore_errors=True)


# -- 7. stale directories of dead owners ---------------------------------------------------------------------------
@needs_root
@pytest.mark.timeout(60)
def test_stale_dirs_of_dead_owners_are_swept_safely(make_sb, tmp_root):
    """Attack (or accident): directories named like a dead owner's run dir are owned by another uid, contain a
    symlink to a root-owned directory, or are themselves a symlink to one. Defence: a new sandbox removes the
    stale directory whatever its owner, and never touches what a link points to."""
    p = subprocess.Popen(["true"]); p.wait()
    dead = p.pid
    assert not psutil.pid_exists(dead)
    d, f, content = make_decoy(tmp_root)
    tmp = tempfile.gettempdir()
    stale, link = os.path.join(tmp, f"cl-sbx-{dead}-test"), os.path.join(tmp, f"cl-sbx-{dead}-link")
    try:
        os.mkdir(stale)
        Path(stale, "kernel.log").write_text("old")
        os.symlink(d, os.path.join(stale, "evil"))
        for n in (stale, os.path.join(stale, "kernel.log")): os.chown(n, OTHER_UID, OTHER_UID)
        os.lchown(os.path.join(stale, "evil"), OTHER_UID, OTHER_UID)
        os.symlink(d, link)
        sb = make_sb()
        sb.start()
        assert not os.path.lexists(stale), "the stale directory of a dead owner (owned by another uid) was left"
        assert_untouched(d, f, content)
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        if os.path.islink(link): os.unlink(link)


# -- 8. secrets ----------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_host_process_arguments_are_invisible(make_sb):
    """Attack: read secrets from other processes' command lines (/proc/*/cmdline), and signal them.
    Defence: the kernel has its own pid namespace and /proc: the host process holding an API key in its argv is
    neither listed nor reachable by os.kill."""
    secret = f"sk-SECRET-{uuid.uuid4().hex}"
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--api-key={secret}"])
    try:
        sb = make_sb(max_output_chars=5000)
        out = kernel_json(sb, f"""
import json, os
needle, hits, seen = ({secret[:10]!r} + {secret[10:]!r}).encode(), [], 0
for p in os.listdir('/proc'):
    if p.isdigit():
        try: c = open(f'/proc/{{p}}/cmdline', 'rb').read()
        except OSError: continue
        seen += 1
        if needle in c: hits.append(p)
try: os.kill({victim.pid}, 0); sig = 'signalled'
except OSError as e: sig = type(e).__name__
print(json.dumps({{'hits': hits, 'seen': seen, 'kill': sig}}))""")
        assert out["seen"] > 0, out                     # the scan itself worked
        assert out["hits"] == [], f"the secret argv is visible from the kernel: {out}"
        assert out["kill"] != "signalled", out
    finally:
        victim.kill(); victim.wait()


@pytest.mark.timeout(90)
def test_session_keyring_is_out_of_reach():
    """Attack: the kernel inherits the researcher's session keyring (where credential helpers keep secrets) and
    searches and reads a key from it. Set up in a subprocess, so pytest's own keyring is untouched.
    Defence: the kernel has a keyring of its own: the search fails (ENOKEY or EACCES), the secret never shows."""
    if platform.machine() != "x86_64": pytest.skip("the keyctl/add_key syscall numbers here are x86_64's")
    secret, desc = f"keyring-SECRET-{uuid.uuid4().hex}", f"cascade-test-{uuid.uuid4().hex[:8]}"
    kernel_code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long\n"
        f"k = libc.syscall(250, 10, -3, b'user', {desc.encode()!r}, 0)\n"
        "if k < 0: print('search failed', ctypes.get_errno())\n"
        "else:\n    buf = ctypes.create_string_buffer(4096)\n    n = libc.syscall(250, 11, ctypes.c_long(k), buf, 4096)\n"
        "    print('found', k, 'read', n, buf.raw[:max(n, 0)].decode(errors='replace'))")
    script = f"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
if libc.syscall(250, 1, b'cascade-test-session') < 0:
    print(json.dumps({{'skip': 'KEYCTL_JOIN_SESSION_KEYRING: ' + os.strerror(ctypes.get_errno())}})); raise SystemExit
payload = {secret.encode()!r}
key = libc.syscall(248, b'user', {desc.encode()!r}, payload, len(payload), -3)
if key < 0: print(json.dumps({{'skip': 'add_key: ' + os.strerror(ctypes.get_errno())}})); raise SystemExit
try:
    from cascade_lab.sandbox import PythonSandbox
    with PythonSandbox(timeout=30) as sb: r = sb.run({kernel_code!r})
    print(json.dumps({{'output': r.output, 'error': r.error}}))
finally:
    libc.syscall(250, 3, ctypes.c_long(key))          # KEYCTL_REVOKE
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=80, env=child_env())
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if "skip" in out: pytest.skip(f"no keyrings here ({out['skip']})")
    assert secret not in out["output"], f"the kernel read the researcher's key: {out['output']}"
    words = out["output"].split()
    assert out["output"].startswith("search failed") and int(words[-1]) in (errno.ENOKEY, errno.EACCES), out


@needs_root
@pytest.mark.timeout(60)
def test_credential_dirs_named_by_the_environment_are_hidden(make_sb, visible_scratch, monkeypatch):
    """Attack: HF_HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME, XDG_DATA_HOME may point outside $HOME (which is hidden),
    and AWS_SHARED_CREDENTIALS_FILE may name any file: the variables are scrubbed from the kernel's environment,
    but the world-readable files they name would still be readable by path.
    Defence: none of them can be read from the kernel (an unrelated file beside them still can: the control)."""
    S = visible_scratch
    secrets, targets = {}, {}
    for var in ("HF_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        d = S / var.lower()
        d.mkdir(); os.chmod(d, 0o755)
        f = d / ("token" if var == "HF_HOME" else "secret.txt")
        secrets[var] = f"{var}-SECRET-{uuid.uuid4().hex}"
        f.write_text(secrets[var]); os.chmod(f, 0o644)
        monkeypatch.setenv(var, str(d))
        targets[var] = str(f)
    aws = S / "aws-credentials"
    secrets["AWS_SHARED_CREDENTIALS_FILE"] = f"aws_secret_access_key = AWS-SECRET-{uuid.uuid4().hex}"
    aws.write_text(secrets["AWS_SHARED_CREDENTIALS_FILE"]); os.chmod(aws, 0o644)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws))
    targets["AWS_SHARED_CREDENTIALS_FILE"] = str(aws)
    control = S / "control.txt"
    control.write_text("visible"); os.chmod(control, 0o644)
    sb = make_sb(max_output_chars=10_000)
    out = kernel_json(sb, f"""
import json
res = {{}}
for name, path in {dict(targets, control=str(control))!r}.items():
    try: res[name] = open(path).read()
    except OSError as e: res[name] = type(e).__name__
print(json.dumps(res))""")
    if out["control"] != "visible": pytest.skip(f"the decoys' directory {S} is not visible to the kernel at all: inconclusive")
    leaked = {k: v for k, v in out.items() if k in secrets and secrets[k] in v}
    assert not leaked, f"readable from the kernel: {sorted(leaked)}"


@pytest.mark.timeout(60)
def test_environment_is_an_allowlist(make_sb, monkeypatch):
    """Attack: credentials in variables whose names do not look secret (index URLs and proxies with passwords,
    database URIs, MYSQL_PWD, a bare TOKEN). Defence: the kernel's environment is an allowlist: none of these
    names reaches it, while harmless locale/time-zone settings (LANG, TZ) do."""
    leaky = {"PIP_INDEX_URL": "https://u:pw@example.invalid/simple", "HTTPS_PROXY": "http://u:pw@127.0.0.1:9",
             "MONGODB_URI": "mongodb://u:pw@h/db", "MYSQL_PWD": "pw", "TOKEN": "t"}
    for k, v in leaky.items(): monkeypatch.setenv(k, v)
    monkeypatch.setenv("LANG", "C.UTF-8"); monkeypatch.setenv("TZ", "UTC")
    sb = make_sb(max_output_chars=10_000)
    out = kernel_json(sb, f"import json, os\nprint(json.dumps({{k: os.environ.get(k) for k in {[*leaky, 'LANG', 'TZ']!r}}}))")
    passed = sorted(k for k in leaky if out[k] is not None)
    assert not passed, f"reached the kernel: {passed}"
    assert (out["LANG"], out["TZ"]) == ("C.UTF-8", "UTC"), out


@needs_root
@pytest.mark.timeout(60)
def test_another_sandboxs_log_is_unreadable(make_sb):
    """Attack: read another live sandbox's kernel.log (what that session's kernel wrote to stderr: other
    researchers' or other episodes' data). Defence: sandbox B cannot read sandbox A's run_dir/kernel.log, and
    that file is mode 0600."""
    a, b = make_sb(), make_sb()
    a.start(); b.start()
    log = os.path.join(a.run_dir, "kernel.log")
    assert os.path.isfile(log), log
    r = b.run(f"try: open({log!r}).read(); print('read')\nexcept OSError as e: print(type(e).__name__)")
    assert r.output in ("PermissionError", "FileNotFoundError"), f"B reading A's log: {r.output}"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600, oct(os.stat(log).st_mode)


@pytest.fixture
def gpu_decoy(visible_scratch, monkeypatch):
    "A world-readable decoy 'GPU device' that `_GPU_DEVICE_GLOBS` matches, and a control file that it does not."
    dev = visible_scratch / "nvidia-decoy0"
    dev.write_text("gpu-device-contents"); os.chmod(dev, 0o644)
    control = visible_scratch / "control.txt"
    control.write_text("visible"); os.chmod(control, 0o644)
    monkeypatch.setattr(isom, "_GPU_DEVICE_GLOBS", (str(visible_scratch / "nvidia-decoy*"),))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    code = (f"import json, os\nres = {{'cuda': os.environ.get('CUDA_VISIBLE_DEVICES')}}\n"
            f"for k, p in [('dev', {str(dev)!r}), ('control', {str(control)!r})]:\n"
            "    try: res[k] = open(p).read()\n    except OSError as e: res[k] = type(e).__name__\nprint(json.dumps(res))")
    return code


@needs_root
@pytest.mark.timeout(60)
def test_gpus_are_hidden_by_default(make_sb, gpu_decoy):
    """Attack: use (or read, or fingerprint) the host's GPUs from the kernel. Defence: with gpus=False the device
    files matching `_GPU_DEVICE_GLOBS` cannot be read in the kernel and CUDA_VISIBLE_DEVICES is ''."""
    sb = make_sb(gpus=False)
    out = kernel_json(sb, gpu_decoy)
    if out["control"] != "visible": pytest.skip("the decoy's directory is not visible to the kernel at all: inconclusive")
    assert out["dev"] != "gpu-device-contents", "the kernel read the (decoy) GPU device"
    assert out["cuda"] == "", out
    assert not sb.isolation.gpus.startswith("NOT"), sb.isolation.gpus


@needs_root
@pytest.mark.timeout(60)
def test_gpus_when_asked(make_sb, gpu_decoy):
    "With gpus=True the (world-readable) device files are readable in the kernel."
    sb = make_sb(gpus=True)
    out = kernel_json(sb, gpu_decoy)
    assert out["control"] == "visible", out
    assert out["dev"] == "gpu-device-contents", out


@needs_root
@pytest.mark.timeout(60)
def test_code_venv_and_system_dirs_are_not_writable(make_sb, visible_scratch):
    """Attack: plant code where the researcher's process will import it (the cascade_lab package, the venv's
    site-packages) or write into a root-owned system directory (a 0755 decoy). Defence: every attempt fails, and
    nothing appears on the host."""
    decoy = visible_scratch / "system"
    decoy.mkdir(); os.chmod(decoy, 0o755)
    targets = [os.path.dirname(cascade_lab.__file__), *[p for p in site.getsitepackages() if os.path.isdir(p)], str(decoy)]
    name = f"cascade_planted_{uuid.uuid4().hex}.py"
    try:
        sb = make_sb(max_output_chars=10_000)
        out = kernel_json(sb, f"""
import json, os
res = {{}}
for d in {targets!r}:
    try:
        with open(os.path.join(d, {name!r}), 'x') as f: f.write('print("planted")')
        res[d] = 'created'
    except OSError as e: res[d] = type(e).__name__
print(json.dumps(res))""")
        assert "created" not in out.values(), out
        assert not [d for d in targets if os.path.lexists(os.path.join(d, name))]
    finally:
        for d in targets:
            p = os.path.join(d, name)
            if os.path.lexists(p): os.unlink(p)


# -- 9. recovery ---------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_recovers_from_an_unusable_workdir(make_sb):
    """Attack: make the working directory unusable for the next kernel (chmod 0) and die. Defence: the next call
    works in a restarted session (the output says the state was lost), and so do further restarts."""
    sb = make_sb()
    sb.run("x = 1")
    for attack in ("import os; os.chmod('.', 0); os._exit(0)", "import os; os.chmod('.', 0); os._exit(0)", "import os; os._exit(0)"):
        r = sb.run(attack)
        assert r.restarted and "state was lost" in r.output, r
        r = sb.run("open('f.txt', 'w').write('ok'); print(open('f.txt').read(), 'x' in dir())")
        assert (r.output, r.error) == ("ok False", None), r


@pytest.mark.timeout(60)
def test_recovers_from_workdir_replaced_by_a_file(make_sb):
    """Attack: replace the working directory with a regular file and die, so that preparing it again fails.
    Defence: the next call works, and after close() nothing of the sandbox is left on the host."""
    before = sandbox_tmp_entries()
    sb = make_sb()
    try:
        r = sb.run("import os, shutil\nwd = os.getcwd()\nos.chdir('/')\nshutil.rmtree(wd)\nopen(wd, 'w').write('x')\nos._exit(0)")
        assert r.restarted, r
        r = sb.run("import os; print(os.path.isdir(os.getcwd()))")
        assert (r.output, r.error) == ("True", None), r
        run_dir = sb.run_dir
        sb.close()
        assert not os.path.lexists(run_dir)
        assert not (sandbox_tmp_entries() - before), sandbox_tmp_entries() - before
    finally:
        sb.close()
        remove_new_tmp_entries(before)


@pytest.mark.timeout(60)
def test_close_during_a_running_call(make_sb):
    """Attack (or a researcher in a hurry): close() from another thread while a call runs. Defence: close() returns
    within 2 s (interrupt, then kill), and the running call ends within 3 s, with an error result or a
    SandboxError saying the sandbox was closed; it does not hang until its own timeout."""
    sb = make_sb(timeout=30)
    sb.start()
    box = {}
    def call():
        try: box["result"] = sb.run("import time; time.sleep(60)", timeout=12)
        except BaseException as e: box["raised"] = e
    runner = threading.Thread(target=call, daemon=True)
    closer = threading.Thread(target=sb.close, daemon=True)
    runner.start()
    time.sleep(1)
    t0 = time.monotonic()
    closer.start()
    try:
        closer.join(2.0)
        close_s = time.monotonic() - t0
        assert not closer.is_alive(), "close() did not return within 2 s"
        runner.join(max(0.0, 3.0 - (time.monotonic() - t0)))
        assert not runner.is_alive(), "the running call did not end within 3 s of close()"
        if "raised" in box:
            assert isinstance(box["raised"], SandboxError) and "closed" in str(box["raised"]), repr(box["raised"])
        else:
            assert box["result"].error is not None, box["result"]
        assert close_s <= 2.0
    finally:
        closer.join(30); runner.join(30)


# -- 10. network, without leaving loopback --------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_network_namespace_has_only_loopback(make_sb):
    """Attack: reach anything outside the kernel: the host's loopback services (a listener this test opens on
    127.0.0.1), or any route out. Checked without addressing anything but 127.0.0.1: the kernel's namespace has
    no interface but `lo` (in /sys/class/net too, not only /proc/net) and no routes, the host's listener is
    unreachable, and the kernel's own loopback works."""
    srv = loopback_listener()
    port = srv.getsockname()[1]
    try:
        sb = make_sb(max_output_chars=10_000)
        out = kernel_json(sb, f"""
import json, os, socket
res = {{'sys_class_net': sorted(os.listdir('/sys/class/net')),
       'proc_net_dev': sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]),
       'routes': open('/proc/net/route').read().splitlines()[1:]}}
try: socket.create_connection(('127.0.0.1', {port}), timeout=2).close(); res['host_loopback'] = 'connected'
except OSError as e: res['host_loopback'] = type(e).__name__
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()
c = socket.create_connection(s.getsockname(), timeout=2); res['own_loopback'] = 'connected'; c.close(); s.close()
print(json.dumps(res))""")
        assert out["host_loopback"] != "connected", out
        srv.setblocking(False)
        with pytest.raises(BlockingIOError): srv.accept()          # nothing reached the host's listener
        assert out["own_loopback"] == "connected", out
        assert out["proc_net_dev"] == ["lo"] and out["routes"] == [], out
        assert out["sys_class_net"] == ["lo"], f"/sys/class/net shows the host's interfaces: {out['sys_class_net']}"
    finally:
        srv.close()


@needs_root
@pytest.mark.timeout(90)
def test_no_mount_of_the_kernel_reaches_the_host_when_mounts_are_shared():
    """On systemd machines `/` is a shared mount, and a new mount namespace starts as its peer: a mount made there
    before the tree is made private (the kernel's /proc, /sys, tmpfs) would appear on the host, a fresh /proc over
    the host's among them. Run the sandbox in a mount namespace whose mounts are shared, and check that its mount
    table, /proc and /sys are what they were."""
    if not shutil.which("unshare"): pytest.skip("no unshare command")
    script = ("import json, os\nfrom cascade_lab.sandbox import PythonSandbox\n"
              "before = open('/proc/self/mountinfo').read()\n"
              "with PythonSandbox() as s:\n"
              "    r = s.run('print(6 * 7)')\n"
              "    own = f' {s.run_dir}/k '     # the kernel's socket directory: a small tmpfs of the host's, by design\n"
              "    during = ''.join(l for l in open('/proc/self/mountinfo').readlines() if own not in l)\n"
              "    own_proc = open('/proc/self/stat').read().split()[0] == str(os.getpid())\n"
              "    net = sorted(os.listdir('/sys/class/net'))\n"
              "print(json.dumps({'out': r.output, 'same': before == during, 'own_proc': own_proc, 'net': net,\n"
              "                  'new': sorted(set(during.splitlines()) - set(before.splitlines()))}))\n")
    r = subprocess.run(["unshare", "-m", "--propagation", "shared", sys.executable, "-c", script], env=child_env(),
                       capture_output=True, text=True, timeout=80)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    host_net = sorted(os.listdir("/sys/class/net"))
    assert out["out"] == "42" and out["own_proc"] and out["net"] == host_net, out
    assert out["same"], f"mounts of the kernel appeared on the host: {out['new']}"


@needs_root
@pytest.mark.timeout(60)
def test_socket_directory_full_of_links(make_sb, tmp_root):
    """Attack: the kernel's socket directory (on the host, owned by its uid while it runs) is the other place the
    kernel can write that root touches again: fill it with links to a root-owned decoy, including one named like
    the connection file root writes there at the next start, then die. Defence: the next start removes the links
    without following them and writes its files without following any link; the decoy is untouched."""
    d, f, content = make_decoy(tmp_root)
    sb = make_sb()
    code = ("import os, ipykernel\nk = os.path.dirname(ipykernel.get_connection_file())\n"
            f"for name, target in [('evil', {str(d)!r}), ('evil-file', {str(f)!r})]: os.symlink(target, os.path.join(k, name))\n"
            f"os.remove(os.path.join(k, 'kernel.json')); os.symlink({str(f)!r}, os.path.join(k, 'kernel.json'))\n"
            f"os.remove(os.path.join(k, 'startup.py')); os.symlink({str(f)!r}, os.path.join(k, 'startup.py'))\n"
            "print(sorted(os.listdir(k)))")
    r = sb.run(code)
    assert r.error is None and "evil" in r.output, r
    r = sb.run("import os; os._exit(0)")
    assert r.restarted, r
    r = sb.run("print(6 * 7)")
    assert (r.output, r.error) == ("42", None), r
    assert_untouched(d, f, content)


@needs_root
@pytest.mark.timeout(90)
def test_socket_directory_and_log_cannot_fill_the_host_disk(make_sb):
    """Attack: the two host files the kernel can reach are its socket directory (it must create its sockets there)
    and its log (its stdout and stderr): write 300 MB and 10,000 files to the first, 300 MB to the second.
    Defence: the socket directory is a tmpfs of 1 MB and 64 inodes; the log is copied by the supervisor and cut
    at 1 MB. The session keeps working."""
    sb = make_sb(timeout=60)
    r = sb.run("import os, ipykernel\nk = os.path.dirname(ipykernel.get_connection_file())\n"
               "try:\n    with open(os.path.join(k, 'fill'), 'wb', buffering=0) as f:\n"
               "        for _ in range(300): f.write(b'x' * 2**20)\nexcept OSError as e: print('bytes', e.errno)\n"
               "os.remove(os.path.join(k, 'fill'))\n"
               "try:\n    for i in range(10_000): open(os.path.join(k, f'f{i}'), 'w').close()\nexcept OSError as e: print('files', i, e.errno)\n"
               "for n in os.listdir(k):\n    if n.startswith('f') and n[1:].isdigit(): os.remove(os.path.join(k, n))\n"
               "import sys\nlog_fds = [s._original_stdstream_copy for s in (sys.stdout, sys.stderr)\n"
               "           if getattr(s, '_original_stdstream_copy', None) is not None]   # ipykernel's copies of fds 1, 2\n"
               "print('log fds', len(log_fds))\n"
               "for fd in log_fds:\n    for _ in range(150): os.write(fd, b'y' * 2**20)\n")
    assert "bytes 28" in r.output and "files" in r.output and "log fds 2" in r.output, r            # ENOSPC
    assert int(r.output.split("files ")[1].split()[0]) < 64, r.output
    time.sleep(0.5)
    assert os.path.getsize(os.path.join(sb.run_dir, "kernel.log")) < 2 * 2**20
    assert sb.run("print(6 * 7)").output == "42"


@needs_root
@pytest.mark.timeout(90)
def test_deep_trees_do_not_break_restart_close_or_later_sandboxes(make_sb, tmp_path):
    """Attack: a directory tree 3000 levels deep (past Python's recursion limit) in the socket directory and in a
    given working directory, then die: root removes or walks both. Defence: the restart works, close() returns
    without an error, the run directory is gone, the workdir is given back down to its walk's depth limit."""
    work = tmp_path / "w"
    work.mkdir()
    os.chown(work, OTHER_UID, OTHER_UID)
    try: _deep_trees(make_sb, work)
    finally:      # pytest's own clean-up of old tmp_path trees could not remove a tree this deep
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)])


def _deep_trees(make_sb, work):
    sb = make_sb(workdir=work)
    deep = ("import os\ndef deep(start):\n    fd = os.open(start, os.O_RDONLY)\n    for i in range(3000):\n"
            "        os.mkdir('d', dir_fd=fd); n = os.open('d', os.O_RDONLY, dir_fd=fd); os.close(fd); fd = n\n    os.close(fd)\n")
    r = sb.run(deep + "import ipykernel\ntry: deep(os.path.dirname(ipykernel.get_connection_file()))\n"
               "except OSError as e: print('socket dir refused', e.errno)\ndeep('.')\nprint('ok')")
    assert r.output.endswith("ok"), r
    r = sb.run("import os; os._exit(0)")
    assert r.restarted, r
    assert sb.run("print(6 * 7)").output == "42"
    run_dir = sb.run_dir
    sb.close()
    assert not os.path.exists(run_dir)
    assert work.stat().st_uid == OTHER_UID and (work / "d").stat().st_uid == OTHER_UID


@needs_root
@pytest.mark.timeout(90)
def test_links_in_a_given_workdir_cannot_steer_what_is_bound_back(make_sb, tmp_path, monkeypatch):
    """Attack: a folder of the researcher's working directory is on sys.path (a project's src/); the kernel,
    which owns that directory, replaces the folder with a link to a hidden directory (a credential store under
    the home) and dies, hoping root resolves the link at the restart and binds the target back. Defence: what
    is shown is decided once, at the first start; the target stays hidden."""
    home = os.path.realpath(os.path.expanduser("~"))
    secret = Path(tempfile.mkdtemp(prefix=".cascade-hidden-", dir=home))
    (secret / "token").write_text("hf_decoy_secret")
    os.chmod(secret, 0o755); os.chmod(secret / "token", 0o644)
    work = tmp_path / "w"
    (work / "lib").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(work / "lib"))
    try:
        sb = make_sb(workdir=work)
        probe = f"import os\ntry: print(open({str(secret / 'token')!r}).read())\nexcept OSError as e: print(type(e).__name__)"
        assert sb.run(probe).output == "FileNotFoundError"
        r = sb.run(f"import os; os.rename('lib', 'lib0'); os.symlink({str(secret)!r}, 'lib'); os._exit(0)")
        assert r.restarted, r
        assert sb.run(probe).output == "FileNotFoundError"
    finally:
        shutil.rmtree(secret, ignore_errors=True)


@needs_root
@pytest.mark.timeout(60)
def test_a_project_folder_on_sys_path_under_the_home_is_not_bound_back(make_sb, monkeypatch):
    """A researcher's script or notebook folder under the home is on sys.path, with a `.env` beside the code. The
    kernel needs nothing from it: it stays under the home's cover."""
    home = os.path.realpath(os.path.expanduser("~"))
    proj = Path(tempfile.mkdtemp(prefix="cascade-proj-", dir=home))
    (proj / ".env").write_text("OPENAI_API_KEY=sk-decoy")
    os.chmod(proj, 0o755); os.chmod(proj / ".env", 0o644)
    monkeypatch.syspath_prepend(str(proj))
    try:
        sb = make_sb()
        r = sb.run(f"import os\ntry: print(open({str(proj / '.env')!r}).read())\nexcept OSError as e: print(type(e).__name__)")
        assert r.output == "FileNotFoundError", r
        assert str(proj) not in sb.isolation.home
    finally:
        shutil.rmtree(proj, ignore_errors=True)
