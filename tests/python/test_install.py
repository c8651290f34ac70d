"""install/plugins.sh: where files go, idempotence, DESTDIR, the Krita zip (importable as Krita's
"Import Python Plugin from File" unpacks it); install/host-tests.sh's skip message."""

import os
import subprocess
import sys
import zipfile

import pytest

import fake_krita
from conftest import LIB, REPO

SCRIPT = os.path.join(REPO, "install", "plugins.sh")


def plugins(*args, env=None):
    out = subprocess.run(["bash", SCRIPT] + list(args), capture_output=True, text=True,
                         env=dict(os.environ, CLIPSHAPE_LIB=LIB, **(env or {})))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_missing_host_dirs_only_say_where_files_would_go(tmp_path):
    out = plugins("--home", str(tmp_path), "--no-zip")
    assert "GIMP 3: %s/.config/GIMP/3.0 does not exist" % tmp_path in out
    assert "%s/.config/GIMP/3.0/plug-ins/clipshape/{clipshape.py" % tmp_path in out
    assert "Krita: %s/.local/share/krita does not exist" % tmp_path in out
    assert os.listdir(tmp_path) == []


def test_install_is_idempotent_and_links_the_library(tmp_path):
    (tmp_path / ".config" / "GIMP" / "3.0").mkdir(parents=True)
    (tmp_path / ".local" / "share" / "krita").mkdir(parents=True)
    first = plugins("--home", str(tmp_path), "--no-zip")
    gimp = tmp_path / ".config" / "GIMP" / "3.0" / "plug-ins" / "clipshape"
    pykrita = tmp_path / ".local" / "share" / "krita" / "pykrita"
    have_lib = os.path.exists(LIB)
    assert sorted(os.listdir(gimp)) == ["VERSION", "clipshape.py", "clipshape_ctypes.py",
                                        "clipshape_logic.py"] + ["libclipshape.so"] * have_lib
    # The one version (Cargo.toml's), for the plug-in's About.
    version = open(os.path.join(REPO, "Cargo.toml")).read().split("[workspace.package]")[1]
    assert (gimp / "VERSION").read_text().strip() in version
    assert os.access(gimp / "clipshape.py", os.X_OK)
    if have_lib:
        assert os.path.islink(gimp / "libclipshape.so")
        assert os.path.samefile(gimp / "libclipshape.so", LIB)
    else:
        assert "MISSING" in first
    assert sorted(os.listdir(pykrita)) == ["clipshape", "clipshape.desktop"]
    assert {"__init__.py", "docker.py", "worker.py", "extension.py", "krita_host.py",
            "clipshape_ctypes.py", "clipshape_logic.py"} <= set(os.listdir(pykrita / "clipshape"))
    assert "installed" in first and ("linked" in first) == have_lib
    second = plugins("--home", str(tmp_path), "--no-zip")
    assert "installed" not in second and "linked" not in second
    assert second.count("unchanged") == first.count("installed") + first.count("linked")


def test_destdir_and_copy_lib(tmp_path):
    home = "/home/someone"
    plugins("--home", home, "--create-dirs", "--copy-lib", "--no-zip",
            env={"DESTDIR": str(tmp_path)})
    lib = tmp_path / "home" / "someone" / ".config" / "GIMP" / "3.0" / "plug-ins" / \
        "clipshape" / "libclipshape.so"
    if os.path.exists(LIB):
        assert lib.is_file() and not lib.is_symlink()
    assert (tmp_path / "home" / "someone" / ".local" / "share" / "krita" / "pykrita" /
            "clipshape.desktop").is_file()


def test_krita_zip_is_reproducible_and_importable(tmp_path, monkeypatch):
    plugins("--zip-only", "--dist", str(tmp_path / "dist"))
    path = tmp_path / "dist" / "clipshape-krita.zip"
    first = path.read_bytes()
    out = plugins("--zip-only", "--dist", str(tmp_path / "dist"))
    assert "unchanged" in out and path.read_bytes() == first
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
        assert "clipshape.desktop" in names and "clipshape/__init__.py" in names
        assert "clipshape/clipshape_ctypes.py" in names and "clipshape/clipshape_logic.py" in names
        assert not any(n.endswith(".so") for n in names)
        desktop = z.read("clipshape.desktop").decode()
        assert "X-KDE-Library=clipshape" in desktop and "ServiceTypes=Krita/PythonPlugin" in desktop
        pykrita = tmp_path / "pykrita"
        z.extractall(pykrita)
    pkg = fake_krita.install(monkeypatch, pykrita)
    try:
        assert pkg.__file__.startswith(str(pykrita))
        assert sys.modules["krita"].Krita.instance().docker_factories
    finally:
        for name in [n for n in sys.modules if n == "clipshape" or n.startswith("clipshape.")]:
            del sys.modules[name]


def test_host_tests_skip_without_a_root(tmp_path):
    out = subprocess.run(["bash", os.path.join(REPO, "install", "host-tests.sh")],
                         capture_output=True, text=True,
                         env=dict(os.environ, CLIPSHAPE_TRIXIE_ROOT=str(tmp_path / "none")))
    assert out.returncode == 0
    assert out.stdout.startswith("skipped: no trixie root at %s" % (tmp_path / "none"))
    assert "--create" in out.stdout


PLUGIN_SOURCES = sorted(
    os.path.relpath(os.path.join(d, f), REPO)
    for d, _, files in os.walk(os.path.join(REPO, "plugin-wrappers")) for f in files
    if f.endswith(".py"))


@pytest.mark.parametrize("name", PLUGIN_SOURCES)
def test_plugin_sources_parse_as_python_3_9(name):
    import ast
    with open(os.path.join(REPO, name)) as f:
        ast.parse(f.read(), feature_version=(3, 9))


def test_the_gimp_plugin_is_executable_in_git():
    # GIMP 3 runs only executable plug-ins, and copying the folder by hand keeps git's mode.
    out = subprocess.run(["git", "ls-files", "-s", "plugin-wrappers/gimp/clipshape/clipshape.py"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    if not out:
        pytest.skip("not a git checkout")
    assert out.split()[0] == "100755", out
