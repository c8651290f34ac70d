"""The release's install.sh as a person meets it (install, again, upgrade, uninstall), on a slim
copy of the release archive: every file of dist/clipshape-<version>-linux-x86_64.tar.xz, the
large libraries cut to a few bytes (what install.sh does with files does not depend on their
content). The archive tier of install/host-tests.sh installs the real one in a Debian 13 root
and runs GIMP, Krita and the command from it."""

import glob
import hashlib
import os
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

from conftest import REPO

ARCHIVES = sorted(glob.glob(os.path.join(REPO, "dist", "clipshape-*-linux-x86_64.tar.xz")), key=os.path.getmtime)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The unpacked release, slim: (folder, version)."""
    if not ARCHIVES:
        pytest.skip("no release archive in dist/ (bash install/package.sh)")
    out = tmp_path_factory.mktemp("release")
    with tarfile.open(ARCHIVES[-1]) as t:
        t.extractall(out, filter="data")
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    for lib in (folder / "lib").iterdir():
        if lib.stat().st_size > 100_000:
            lib.write_bytes(b"slim copy of " + lib.name.encode())
    # The checkout's install.sh (package.sh ships it; an archive made before an edit of it
    # would test the old one).
    shutil.copy(os.path.join(REPO, "install", "bundle-install.sh"), folder / "install.sh")
    return folder, (folder / "VERSION").read_text().strip()


def home_with_hosts(tmp_path, name="home"):
    home = tmp_path / name
    (home / ".config" / "GIMP" / "3.0").mkdir(parents=True)
    (home / ".local" / "share" / "krita").mkdir(parents=True)
    return home


def run(script, home, *args, env=None, check=True, **kw):
    e = {"HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    e.update(env or {})
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=e, **kw)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_install_uninstall_and_the_installed_copy(release, tmp_path):
    folder, version = release
    home = home_with_hosts(tmp_path)
    out = run(folder / "install.sh", home).stdout
    engine = home / ".local" / "share" / "clipshape" / version
    gimp = home / ".config" / "GIMP" / "3.0" / "plug-ins" / "clipshape"
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    assert (engine / "lib" / "libclipshape.so").is_file() and (gimp / "clipshape.py").is_file(), out
    assert os.access(gimp / "clipshape.py", os.X_OK)
    assert (gimp / "libclipshape.path").read_text().strip() == str(engine / "lib" / "libclipshape.so")
    assert (pykrita / "clipshape.desktop").is_file() and (pykrita / "clipshape" / "docker.py").is_file()
    launcher = home / ".local" / "bin" / "clipshape"
    assert os.readlink(launcher) == str(engine / "bin" / "clipshape")
    # The installed copy only uninstalls: installing from it would remove what it copies from.
    refused = run(engine / "install.sh", home, check=False)
    assert refused.returncode != 0 and "only removes CLIPShape" in refused.stderr
    assert (engine / "lib" / "libclipshape.so").is_file()
    # A person's own files: kept, whatever uninstall does.
    (gimp / "notes.txt").write_text("mine")
    (pykrita / "clipshape" / "docker.py").write_text("# my change")
    out = run(engine / "install.sh", home, "--uninstall").stdout
    assert (gimp / "notes.txt").read_text() == "mine" and (pykrita / "clipshape" / "docker.py").is_file(), out
    assert "kept" in out and not engine.exists() and not launcher.exists()
    assert not (pykrita / "clipshape" / "worker.py").exists() and not (pykrita / "clipshape.desktop").exists()
    assert (home / ".config" / "GIMP" / "3.0").is_dir() and (home / ".local" / "share" / "krita").is_dir()
    assert "Nothing to remove" in run(folder / "install.sh", home, "--uninstall").stdout


def test_again_and_an_upgrade_replace_the_earlier_install(release, tmp_path):
    folder, version = release
    older = tmp_path / "older"
    shutil.copytree(folder, older)
    (older / "VERSION").write_text("0.3.9\n")
    home = home_with_hosts(tmp_path)
    run(older / "install.sh", home)
    base = home / ".local" / "share" / "clipshape"
    assert (base / "0.3.9").is_dir()
    run(folder / "install.sh", home)
    run(folder / "install.sh", home)
    assert not (base / "0.3.9").exists() and (base / version / "bin" / "clipshape").is_file()
    record = (base / "installed.txt").read_text()
    assert record.startswith("# version %s\n" % version) and "0.3.9" not in record
    run(folder / "install.sh", home, "--uninstall")
    assert not base.exists() or os.listdir(base) == []


def test_uninstall_removes_nothing_outside_its_places_nor_through_links(release, tmp_path):
    folder, _ = release
    home = home_with_hosts(tmp_path)
    run(folder / "install.sh", home)
    important = home / "Documents" / "important.txt"
    important.parent.mkdir()
    important.write_text("a person's file")
    digest = hashlib.sha256(important.read_bytes()).hexdigest()
    record = home / ".local" / "share" / "clipshape" / "installed.txt"
    with open(record, "a") as f:
        f.write("f %s %s\nd %s\n" % (digest, important, important.parent))
    # The Krita plug-in's folder replaced by a link to the person's own plug-in in development.
    mine = home / "dev" / "myplugin"
    shutil.copytree(home / ".local" / "share" / "krita" / "pykrita" / "clipshape", mine)
    shutil.rmtree(home / ".local" / "share" / "krita" / "pykrita" / "clipshape")
    os.symlink(mine, home / ".local" / "share" / "krita" / "pykrita" / "clipshape")
    before = files_under(mine)
    out = run(folder / "install.sh", home, "--uninstall").stdout
    assert important.read_text() == "a person's file", out
    assert files_under(mine) == before, out


def test_an_interrupted_install_is_undone_by_the_next(release, tmp_path):
    folder, version = release
    home = home_with_hosts(tmp_path)
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    for delay in [0.03 * i for i in range(1, 16)]:
        p = subprocess.Popen(["bash", str(folder / "install.sh")], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        run(folder / "install.sh", home)
        engine = home / ".local" / "share" / "clipshape" / version
        parts = ("bin", "lib", "include", "licences")
        shipped = [f for f in files_under(folder) if f.split("/")[0] in parts]
        assert [f for f in files_under(engine) if f.split("/")[0] in parts] == shipped
        assert (engine / "lib" / "libtorch_cpu.so").read_bytes() == (folder / "lib" / "libtorch_cpu.so").read_bytes()
        leftovers = [p.name for p in (home / ".local" / "share" / "clipshape").iterdir() if p.name.startswith(".")]
        assert leftovers == [], leftovers


def test_a_copy_that_fails_says_so_and_installs_nothing_broken(release, tmp_path):
    folder, _ = release
    home = home_with_hosts(tmp_path)
    # Files of at most 4 kB: the library cannot be written whole.
    done = subprocess.run(["bash", "-c", 'ulimit -f 8; exec bash "$0"', str(folder / "install.sh")],
                          capture_output=True, text=True, env={"HOME": str(home), "PATH": os.environ["PATH"]})
    assert done.returncode != 0 and "could not" in done.stderr, done.stdout + done.stderr
    base = home / ".local" / "share" / "clipshape"
    assert not (base / "installed.txt").exists()
    assert not (home / ".local" / "bin" / "clipshape").exists()


def test_odd_homes_and_ways_of_running_it(release, tmp_path):
    folder, version = release
    home = home_with_hosts(tmp_path, 'quo"te $(touch INJECTED) `id` dir')
    link = tmp_path / "install-link.sh"
    os.symlink(folder / "install.sh", link)
    done = subprocess.run(["sh", str(link)], capture_output=True, text=True, cwd=tmp_path,
                          env={"HOME": str(home), "PATH": os.environ["PATH"], "XDG_DATA_HOME": "relative"})
    assert done.returncode == 0, done.stdout + done.stderr
    engine = home / ".local" / "share" / "clipshape" / version
    assert engine.is_dir(), "a relative XDG_DATA_HOME is ignored"
    assert not (tmp_path / "relative").exists() and not (tmp_path / "INJECTED").exists()
    assert os.readlink(home / ".local" / "bin" / "clipshape") == str(engine / "bin" / "clipshape")


def test_an_empty_home_is_left_empty(release, tmp_path):
    folder, _ = release
    home = tmp_path / "empty"
    home.mkdir()
    run(folder / "install.sh", home)
    out = run(folder / "install.sh", home, "--uninstall").stdout
    assert os.listdir(home) == [], (out, files_under(home))
