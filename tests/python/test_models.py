"""Model downloads as both plug-ins offer them (clipshape_logic.ModelDownload and the status
lines), through the REAL library from a local HTTP mirror of the tiny models (tiny_store.py)."""

import os
import threading
import time

import pytest

import tiny_store
from conftest import GOLDEN, needs_models

pytestmark = needs_models
FFHQ_BYTES = tiny_store.set_bytes(GOLDEN, tiny_store.FFHQ_FILES + tiny_store.CLIP_FILES)


@pytest.fixture
def store(tiny_mirror):
    return tiny_mirror


def test_formatting(logic):
    assert logic.format_progress(12_345_678, 345_600_000, 4_500_000) == \
        "12.3 / 345.6 MB, 4.5 MB/s"
    assert logic.format_progress(0, 1_558_974_105) == "0.0 / 1,559.0 MB"
    assert logic.format_mb(1_432_826_737) == "1,432.8 MB"
    s = logic.DownloadStatus("running", 5_000_000, 20_000_000, 2_500_000.0, "e4e.pt")
    assert s.fraction == 0.25 and s.text == "5.0 / 20.0 MB, 2.5 MB/s (e4e.pt)"
    assert logic.DownloadStatus("idle", 0, 0, None, "").fraction == 0.0
    assert logic.DownloadStatus("done", 0, 0, None, "").fraction == 1.0


def test_status_lines_of_the_real_store(logic, cs):
    # The built-in manifest, an empty store: every set missing, with its size and licences.
    sets = logic.model_sets("/nonexistent/store")
    assert sorted(sets) == ["car", "ffhq", "horse"]
    line = logic.set_status(sets["ffhq"])
    assert line == "Faces (FFHQ): missing, %s to download" % logic.format_mb(
        sets["ffhq"].download_bytes)
    assert "non-commercial" in logic.licence_text(sets["ffhq"])


def test_download_with_progress_then_the_set_loads(logic, store):
    server, root = store
    sets = logic.model_sets()
    assert list(sets) == ["ffhq"] and not sets["ffhq"].complete
    assert sets["ffhq"].download_bytes == FFHQ_BYTES
    assert logic.set_status(sets["ffhq"]) == "Faces (FFHQ): missing, %s to download" % (
        logic.format_mb(FFHQ_BYTES))
    assert "Tiny e4e" in logic.licence_text(sets["ffhq"])

    seen = []
    thread_ids = set()

    def on_progress(status):
        seen.append(status)
        thread_ids.add(threading.get_ident())

    dl = logic.ModelDownload("ffhq", on_progress=on_progress)
    dl.start()
    assert dl.wait(60), "the download did not end in 60 s"
    final = dl.status()
    assert final.state == "done", final.error
    assert final.done == final.total == FFHQ_BYTES and final.fraction == 1.0
    assert final.rate and final.rate > 0
    assert threading.get_ident() not in thread_ids, "progress came on the calling thread"
    running = [s for s in seen if s.state == "running"]
    assert len(running) >= 10
    dones = [s.done for s in running]
    assert dones == sorted(dones) and len(set(dones)) >= 10 and dones[-1] == FFHQ_BYTES
    assert all(s.total == FFHQ_BYTES for s in running)
    assert {s.file for s in running} == set(tiny_store.FILES)
    assert "MB/s" in running[-1].text and " / 20.8 MB" in running[-1].text
    assert seen[-1].state == "done" and seen[-1].text == "Downloaded 20.8 MB."
    assert sorted(os.path.basename(p) for p in server.requests) == sorted(tiny_store.FILES)

    sets = logic.model_sets()
    assert sets["ffhq"].complete and logic.set_status(sets["ffhq"]) == "Faces (FFHQ): ready"
    # The downloaded set is what a run loads: the tiny 64 px generator's frame.
    ctx = logic.ModelChoice(set_name="ffhq", device="cpu").normalized().open()
    try:
        assert ctx.frame_size() == (64, 64)
    finally:
        ctx.close()
    # Complete: a second download fetches nothing.
    n = len(server.requests)
    assert logic.ModelDownload("ffhq").run().state == "done" and len(server.requests) == n


def test_cancel_midway_keeps_the_partial_file_and_resumes(logic, store):
    server, root = store
    server.delay = 0.01                      # ≈ 6 MB/s: the download takes seconds
    dl = logic.ModelDownload("ffhq")
    t0 = time.monotonic()
    dl.start()
    while dl.status().done < 1_000_000 and time.monotonic() - t0 < 30:
        time.sleep(0.01)
    assert dl.running
    dl.cancel()
    assert dl.wait(10), "the download did not stop within 10 s of cancel()"
    status = dl.status()
    assert status.state == "cancelled" and "resumes" in status.text
    assert 1_000_000 <= status.done < FFHQ_BYTES
    left = logic.model_sets()["ffhq"]
    assert not left.complete and left.download_bytes < FFHQ_BYTES   # the partial file counts
    server.delay = 0
    final = logic.ModelDownload("ffhq").run()
    assert final.state == "done" and logic.model_sets()["ffhq"].complete


def test_cancel_before_any_byte_and_a_failed_download(logic, store, monkeypatch):
    dl = logic.ModelDownload("ffhq")
    dl.cancel()
    assert dl.run().state == "cancelled"
    server, _ = store
    monkeypatch.setenv("CLIPSHAPE_MODELS_MIRROR", server.url + "/gone")   # 404 for every file
    status = logic.ModelDownload("ffhq").run()
    assert status.state == "failed" and status.text.startswith("Download failed: ")
    assert logic.ModelDownload("nosuchset").run().text.startswith("unknown model set 'nosuchset'")


def test_use_files_i_already_have(logic, cs, store, tmp_path):
    """"Use a file I already have": each file of the set is recognised (by name or size),
    checked and copied into the store, the user's own file left where and as it was; the set
    is then complete without a download. A file that is none of the set's is named."""
    server, root = store
    assert logic.store_dir() == str(root)
    sources = {name: os.path.join(GOLDEN, rel) for name, rel in tiny_store.FILES.items()}
    for name in tiny_store.FFHQ_FILES + tiny_store.CLIP_FILES:
        src = sources[name]
        before = os.stat(src)
        stored = logic.add_model_file("ffhq", src)
        assert stored == os.path.join(str(root), name)
        with open(stored, "rb") as a, open(src, "rb") as b:
            assert a.read() == b.read()
        after = os.stat(src)
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert logic.model_sets()["ffhq"].complete
    assert server.requests == []          # nothing was downloaded

    stranger = tmp_path / "holiday.jpg"
    stranger.write_bytes(b"\xff\xd8 not a model at all")
    with pytest.raises(logic.RequestError, match="holiday.jpg is not a file of Faces"):
        logic.add_model_file("ffhq", str(stranger))
    assert stranger.read_bytes() == b"\xff\xd8 not a model at all"
    with pytest.raises(logic.RequestError, match="model file not found"):
        logic.add_model_file("ffhq", str(tmp_path / "nope.pt"))
