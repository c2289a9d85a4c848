"""mt-data list/fetch/verify/register against a real HTTP server on 127.0.0.1 serving a test-built archive."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from mt.common.errors import UserError
from mt.common.files import temp_name
from mt.data import manifests
from mt.data.cli import data_main

LANGS = ["eng_Latn", "deu_Latn", "fra_Latn"]
LINES = {
    "eng_Latn": ["Hello world", "Open file"],
    "deu_Latn": ["Hallo Welt", "Datei öffnen"],
    "fra_Latn": ["Bonjour le monde", "Ouvrir le fichier"],
}


# ---------------------------------------------------------------- test data: a tiny FLORES-like archive
def _flores_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for split in ("dev", "devtest"):
            for lang in LANGS:
                data = ("\n".join(LINES[lang]) + "\n").encode()
                # pad so the archive is big enough to be cut mid-way in several chunks
                data += ("".join(f"{lang} {split} padding line {i} {'x' * 40}\n" for i in range(3000))).encode()
                info = tarfile.TarInfo(f"tinyflores_dataset/{split}/{lang}.{split}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = _flores_tar()
SHA = hashlib.sha256(ARCHIVE).hexdigest()


class _Server:
    """stdlib HTTP server with Range support; ``cut_after`` closes the first response after N bytes."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.cut_after: int | None = None
        # how a Range request is answered: "honour", "ignore" (200 + whole body), "whole206" (206 + whole body),
        # "shifted206" (206 from 500 bytes before the asked offset, with a matching Content-Range)
        self.range_mode = "honour"
        self.requests: list[str | None] = []  # Range header of each GET
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                if self.path.endswith("/missing.tar.gz"):
                    self.send_error(404)
                    return
                data, start = outer.payload, 0
                if rng and outer.range_mode == "ignore":
                    rng = None
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    start = {"whole206": 0, "shifted206": max(start - 500, 0)}.get(outer.range_mode, start)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if outer.cut_after is not None:
                    n, outer.cut_after = outer.cut_after, None
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tinyflores_dataset.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server(ARCHIVE)
    yield s
    s.close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated $NLLB_MINI_HOME and a manifests dir holding only what the test writes."""
    home, mdir = tmp_path / "home", tmp_path / "manifests"
    mdir.mkdir()
    monkeypatch.setenv("NLLB_MINI_HOME", str(home))
    monkeypatch.setenv("NLLB_MINI_MANIFESTS", str(mdir))
    return tmp_path, mdir


def write_manifest(
    mdir: Path, url: str, sha: str | None = SHA, size: int | None = len(ARCHIVE), cid: str = "tinyflores"
) -> Path:
    size_line = f"size = {size}\n" if size is not None else ""
    sha_line = f'sha256 = "{sha}"\n' if sha is not None else ""
    p = mdir / f"{cid}.toml"
    p.write_text(
        f'id = "{cid}"\nkind = "eval-nway"\nlanguages = {LANGS!r}\n'.replace("'", '"')
        + f'description = "test"\nlicense = "CC0"\ncitation = ""\n'
        f'[source]\nurl = "{url}"\n{sha_line}{size_line}archive_format = "tar.gz"\n'
        f'[layout]\nroot = "tinyflores_dataset"\nfiles = ["dev/{{lang}}.dev", "devtest/{{lang}}.devtest"]\n'
        f"line_aligned = true\n"
    )
    return p


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- the shipped manifests
def test_shipped_manifests_parse(monkeypatch, tmp_path):
    monkeypatch.setenv("NLLB_MINI_HOME", str(tmp_path))
    monkeypatch.delenv("NLLB_MINI_MANIFESTS", raising=False)
    ms = {m.id: m for m in manifests.list_manifests()}
    assert {"gettext", "flores200", "nllb-seed", "user-tsv"} <= set(ms)
    fl = ms["flores200"]
    assert fl.source.url == "https://dl.fbaipublicfiles.com/nllb/flores200_dataset.tar.gz"
    assert len(fl.source.sha256) == 64 and fl.source.size and fl.is_archive
    assert len(fl.languages) == 204 and "eng_Latn" in fl.languages
    assert fl.layout.root == "flores200_dataset" and "devtest/{lang}.devtest" in fl.layout.files
    assert ms["gettext"].source.local_glob.endswith("*.mo") and ms["gettext"].languages == "all"
    assert ms["user-tsv"].layout.format == "tsv"
    assert ms["nllb-seed"].source.archive_format == "zip"


def test_list_cli(env, capsys, server):
    _, mdir = env
    write_manifest(mdir, server.url)
    assert data_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tinyflores" in out and "not fetched" in out and "flores200" in out


# ---------------------------------------------------------------- fetch
def test_fetch_good_download_unpacks_and_registers(env, server):
    tmp, mdir = env
    write_manifest(mdir, server.url)
    data = manifests.fetch("tinyflores", progress=False)
    assert data == manifests.default_dest("tinyflores") / "tinyflores_dataset"
    assert (data / "devtest" / "deu_Latn.devtest").read_text().splitlines()[:2] == LINES["deu_Latn"]
    archive = manifests.default_dest("tinyflores") / "tinyflores_dataset.tar.gz"
    assert archive.read_bytes() == ARCHIVE
    assert not list(archive.parent.glob("*.part")) and not list(archive.parent.glob(".unpack*"))
    assert manifests.resolve("tinyflores") == data
    assert server.requests == [None]
    # re-run: verified from disk, nothing downloaded again
    assert manifests.fetch("tinyflores", progress=False) == data
    assert server.requests == [None]


def test_fetch_resumes_after_server_cuts_mid_way(env, server):
    tmp, mdir = env
    write_manifest(mdir, server.url)
    server.cut_after = len(ARCHIVE) // 3
    data = manifests.fetch("tinyflores", dest=tmp / "dl", progress=False)
    assert (tmp / "dl" / "tinyflores_dataset.tar.gz").read_bytes() == ARCHIVE
    assert server.requests[0] is None and server.requests[1] == f"bytes={len(ARCHIVE) // 3}-"
    assert (data / "dev" / "eng_Latn.dev").is_file()


def test_fetch_resumes_truncated_part_file(env, server):
    tmp, mdir = env
    write_manifest(mdir, server.url)
    dest = tmp / "dl"
    dest.mkdir()
    (dest / "tinyflores_dataset.tar.gz.part").write_bytes(ARCHIVE[:1000])  # a killed earlier run
    manifests.fetch("tinyflores", dest=dest, progress=False)
    assert server.requests == ["bytes=1000-"]
    assert (dest / "tinyflores_dataset.tar.gz").read_bytes() == ARCHIVE


def test_fetch_bad_checksum_leaves_no_file(env, server):
    tmp, mdir = env
    write_manifest(mdir, server.url, sha="0" * 64)
    dest = tmp / "dl"
    with pytest.raises(UserError) as ei:
        manifests.fetch("tinyflores", dest=dest, progress=False)
    msg = str(ei.value)
    assert "checksum mismatch" in msg and "0" * 64 in msg and SHA in msg and "manifest" in msg
    assert not (dest / "tinyflores_dataset.tar.gz").exists()
    assert not (dest / "tinyflores_dataset.tar.gz.part").exists()
    assert not (dest / "tinyflores_dataset").exists()
    with pytest.raises(UserError, match="not available"):
        manifests.resolve("tinyflores")


def test_fetch_offline_fails_at_once_with_register_hint(env):
    tmp, mdir = env
    mpath = write_manifest(mdir, f"http://127.0.0.1:{_free_port()}/tinyflores_dataset.tar.gz")
    t0 = time.monotonic()
    with pytest.raises(UserError) as ei:
        manifests.fetch("tinyflores", dest=tmp / "dl", progress=False)
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert "offline" in msg and "mt-data register" in msg and str(mpath) in msg


def test_fetch_http_error_names_url_and_fix(env, server):
    tmp, mdir = env
    url = server.url.replace("tinyflores_dataset.tar.gz", "missing.tar.gz")
    write_manifest(mdir, url)
    with pytest.raises(UserError) as ei:
        manifests.fetch("tinyflores", dest=tmp / "dl", progress=False)
    assert "HTTP 404" in str(ei.value) and url in str(ei.value) and "mt-data register" in str(ei.value)
    assert [p.name for p in (tmp / "dl").glob("*")] == [".lock"]  # the folder's lock; no partial download


def test_fetch_cli_error_is_one_line(env, capsys):
    tmp, mdir = env
    write_manifest(mdir, f"http://127.0.0.1:{_free_port()}/x.tar.gz")
    with pytest.raises(SystemExit) as ei:
        data_main(["fetch", "tinyflores", "--no-progress"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "mt-data register" in err and "Traceback" not in err


# ---------------------------------------------------------------- register / resolve / verify
def test_register_archive_then_resolve(env):
    tmp, mdir = env
    write_manifest(mdir, "http://127.0.0.1:9/unused.tar.gz")
    with pytest.raises(UserError, match="mt-data fetch tinyflores.*mt-data register tinyflores"):
        manifests.resolve("tinyflores")
    archive = tmp / "copy.tar.gz"
    archive.write_bytes(ARCHIVE)
    data = manifests.register("tinyflores", archive, progress=False)
    assert manifests.resolve("tinyflores") == data
    assert (data / "devtest" / "fra_Latn.devtest").is_file()
    reg = manifests.read_registry()["tinyflores"]
    assert reg["path"] == str(archive.resolve()) and reg["sha256"] == SHA
    assert manifests.registry_path().parent == tmp / "home"
    assert "OK" in manifests.verify("tinyflores")  # checks the registered archive's checksum


def test_register_rejects_corrupt_archive(env):
    tmp, mdir = env
    write_manifest(mdir, "http://127.0.0.1:9/unused.tar.gz")
    bad = tmp / "bad.tar.gz"
    bad.write_bytes(ARCHIVE[:-10] + b"0123456789")
    with pytest.raises(UserError, match="sha256 mismatch"):
        manifests.register("tinyflores", bad, progress=False)
    assert "tinyflores" not in manifests.read_registry()


def _unpacked(tmp: Path) -> Path:
    root = tmp / "unpacked"
    with tarfile.open(fileobj=io.BytesIO(ARCHIVE)) as tf:
        tf.extractall(root, filter="data")
    return root


def test_register_directory_and_verify_layout_reports_missing(env):
    tmp, mdir = env
    write_manifest(mdir, "http://127.0.0.1:9/unused.tar.gz")
    root = _unpacked(tmp)
    data = manifests.register("tinyflores", root)  # the folder that holds tinyflores_dataset/
    assert data == root / "tinyflores_dataset" and manifests.resolve("tinyflores") == data
    assert "expected layout" in manifests.verify("tinyflores", root / "tinyflores_dataset")
    (data / "devtest" / "fra_Latn.devtest").unlink()
    with open(data / "dev" / "deu_Latn.dev", "a") as fh:
        fh.write("one line too many\n")
    with pytest.raises(UserError) as ei:
        manifests.verify("tinyflores", data)
    msg = str(ei.value)
    assert "missing devtest/fra_Latn.devtest" in msg and "not line-aligned" in msg and "deu_Latn" in msg


def test_registered_path_gone_is_clear(env):
    tmp, mdir = env
    write_manifest(mdir, "http://127.0.0.1:9/unused.tar.gz")
    root = _unpacked(tmp)
    manifests.register("tinyflores", root)
    import shutil

    shutil.rmtree(root)
    with pytest.raises(UserError, match="path is gone"):
        manifests.resolve("tinyflores")


def test_verify_archive_size_and_checksum(env):
    tmp, mdir = env
    write_manifest(mdir, "http://127.0.0.1:9/unused.tar.gz")
    good = tmp / "a.tar.gz"
    good.write_bytes(ARCHIVE)
    assert SHA in manifests.verify("tinyflores", good)
    short = tmp / "b.tar.gz"
    short.write_bytes(ARCHIVE[:-1])
    with pytest.raises(UserError, match="truncated"):
        manifests.verify("tinyflores", short)


def test_zip_archive_and_glob_layout(env, tmp_path):
    """nllb-seed style: a zip with direction folders, layout `*{lang}*/{lang}`."""
    _, mdir = env
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Seed/ace_Arab-eng_Latn/ace_Arab", "a\nb\n")
        zf.writestr("Seed/ace_Arab-eng_Latn/eng_Latn", "a\nb\n")
        zf.writestr("Seed/eng_Latn-fur_Latn/eng_Latn", "c\n")
        zf.writestr("Seed/eng_Latn-fur_Latn/fur_Latn", "c\n")
    data = buf.getvalue()
    (mdir / "seed.toml").write_text(
        'id = "seed"\nkind = "parallel"\nlanguages = ["ace_Arab", "fur_Latn", "eng_Latn"]\n'
        f'[source]\nurl = "http://127.0.0.1:9/Seed.zip"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
        'archive_format = "zip"\n[layout]\nroot = "Seed"\nfiles = ["*{lang}*/{lang}"]\n'
    )
    z = tmp_path / "Seed.zip"
    z.write_bytes(data)
    root = manifests.register("seed", z, progress=False)
    assert root.name == "Seed" and (root / "eng_Latn-fur_Latn" / "fur_Latn").read_text() == "c\n"
    (root / "eng_Latn-fur_Latn" / "fur_Latn").unlink()
    with pytest.raises(UserError, match=r"missing \*fur_Latn\*/fur_Latn"):
        manifests.verify("seed", root)


def test_user_tsv_register_and_verify(env, tmp_path, monkeypatch):
    monkeypatch.delenv("NLLB_MINI_MANIFESTS")  # the shipped user-tsv manifest
    good = tmp_path / "bitext.tsv"
    good.write_text("Hello\tHallo\nWorld\tWelt\n", encoding="utf-8")
    assert manifests.register("user-tsv", good) == good
    assert manifests.resolve("user-tsv") == good
    assert "2 2-column lines" in manifests.verify("user-tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_bytes("Hello\tHallo\nno tab here\n".encode() + b"caf\xe9\tx\n")
    with pytest.raises(UserError) as ei:
        manifests.register("user-tsv", bad)
    msg = str(ei.value)
    assert f"{bad}:2: 1 tab-separated columns" in msg and f"{bad}:3: invalid UTF-8" in msg


def test_gettext_manifest_checks_corpus_layout(env, tmp_path, monkeypatch):
    monkeypatch.delenv("NLLB_MINI_MANIFESTS")
    corpus = tmp_path / "corpus"
    for lang in ("eng_Latn", "deu_Latn", "fra_Latn"):
        for split in ("dev", "devtest"):
            p = corpus / split / f"{lang}.{split}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("a\nb\n")
    (corpus / "train").mkdir()
    (corpus / "train" / "eng_Latn-deu_Latn.eng_Latn").write_text("a\n")
    with pytest.raises(UserError, match="missing stats.tsv"):
        manifests.register("gettext", corpus)
    (corpus / "stats.tsv").write_text("lang\tn\n")
    (corpus / "devtest" / "fra_Latn.devtest").unlink()
    with pytest.raises(UserError, match="missing devtest/fra_Latn.devtest"):
        manifests.register("gettext", corpus)
    (corpus / "devtest" / "fra_Latn.devtest").write_text("a\nb\n")
    assert manifests.register("gettext", corpus) == corpus
    assert "3 languages" in manifests.verify("gettext")
    with pytest.raises(UserError, match="nothing to download"):
        manifests.fetch("gettext")


def test_bad_manifest_is_reported_with_file(env):
    _, mdir = env
    (mdir / "broken.toml").write_text('id = "broken"\nkind = "parallel"\nlanguages = ["english"]\n[source]\nurl="x"\n')
    with pytest.raises(UserError, match=r"broken\.toml.*unknown language code 'english'"):
        manifests.load_manifest("broken")
    with pytest.raises(UserError, match="no manifest for corpus 'nope'"):
        manifests.load_manifest("nope")


# ---------------------------------------------------------------- resume against servers that get Range wrong
@pytest.mark.parametrize("mode", ["ignore", "whole206", "shifted206"])
def test_resume_restarts_cleanly_when_the_server_ignores_the_range(env, server, mode):
    """Without sha256/size in the manifest nothing else would catch a body appended at the wrong offset."""
    tmp, mdir = env
    write_manifest(mdir, server.url, sha=None, size=None)
    dest = tmp / "dl"
    dest.mkdir()
    (dest / "tinyflores_dataset.tar.gz.part").write_bytes(ARCHIVE[:5000])  # a killed earlier run
    server.range_mode = mode
    manifests.fetch("tinyflores", dest=dest, progress=False)
    assert (dest / "tinyflores_dataset.tar.gz").read_bytes() == ARCHIVE
    assert server.requests[0] == "bytes=5000-"
    assert not (dest / "tinyflores_dataset.tar.gz.part").exists()


def test_part_longer_than_the_servers_file_is_downloaded_again(env, server):
    """A 416 whose Content-Range says the file is shorter than the .part: the .part is another file, not done."""
    tmp, mdir = env
    write_manifest(mdir, server.url, sha=None, size=None)
    dest = tmp / "dl"
    dest.mkdir()
    (dest / "tinyflores_dataset.tar.gz.part").write_bytes(ARCHIVE + b"stale bytes of another version")
    manifests.fetch("tinyflores", dest=dest, progress=False)
    assert (dest / "tinyflores_dataset.tar.gz").read_bytes() == ARCHIVE
    assert server.requests == [f"bytes={len(ARCHIVE) + 30}-", None]


def test_complete_part_confirmed_by_416_is_not_downloaded_again(env, server):
    tmp, mdir = env
    write_manifest(mdir, server.url, sha=None, size=None)
    dest = tmp / "dl"
    dest.mkdir()
    (dest / "tinyflores_dataset.tar.gz.part").write_bytes(ARCHIVE)  # killed after the last byte, before the rename
    manifests.fetch("tinyflores", dest=dest, progress=False)
    assert (dest / "tinyflores_dataset.tar.gz").read_bytes() == ARCHIVE
    assert server.requests == [f"bytes={len(ARCHIVE)}-"]


# ---------------------------------------------------------------- registry under concurrency
def test_parallel_registers_keep_every_entry(env):
    """8 `mt-data register` processes at once: each read-modify-write of the registry must see the others'."""
    tmp, mdir = env
    n = 8
    for i in range(n):
        (mdir / f"bitext{i}.toml").write_text(
            f'id = "bitext{i}"\nkind = "parallel"\nlanguages = []\n[source]\nlocal_path = ""\n'
            '[layout]\nformat = "tsv"\ncolumns = 2\n'
        )
        (tmp / f"b{i}.tsv").write_text(f"Hello {i}\tHallo {i}\n")
    go = tmp / "go"
    script = (
        "import os, sys, time\nfrom mt.data.cli import data_main\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.002)\n"
        "data_main(sys.argv[1:])\n"
    )
    env_vars = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, "register", f"bitext{i}", str(tmp / f"b{i}.tsv")],
            env=env_vars,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(n)
    ]
    time.sleep(1.5)  # let every process import and reach the start line
    go.touch()
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert sorted(manifests.read_registry()) == sorted(f"bitext{i}" for i in range(n))


# ---------------------------------------------------------------- leftovers of killed runs
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_unpack_removes_the_temp_folder_a_killed_unpack_left(env):
    tmp, mdir = env
    write_manifest(mdir, "http://127.0.0.1:9/unused.tar.gz")
    dest = manifests.default_dest("tinyflores")
    leftover = dest / temp_name("unpack").replace(f"-{os.getpid()}.", f"-{_dead_pid()}.")
    (leftover / "tinyflores_dataset").mkdir(parents=True)
    (leftover / "tinyflores_dataset" / "big.bin").write_bytes(b"x" * 100_000)
    live = dest / temp_name("unpack")  # a run still going (this process): not ours to delete
    live.mkdir()
    archive = tmp / "copy.tar.gz"
    archive.write_bytes(ARCHIVE)
    manifests.register("tinyflores", archive, progress=False)
    assert not leftover.exists() and live.is_dir()


# ---------------------------------------------------------------- `mt-data list` with one bad manifest
def test_list_reports_a_bad_manifest_and_lists_the_rest(env, capsys):
    _, mdir = env
    write_manifest(mdir, "http://127.0.0.1:9/unused.tar.gz")
    (mdir / "broken.toml").write_text('id = "broken"\nkind = "parallel"\nlanguages = [1, 2]\n[source]\nurl = "x"\n')
    (mdir / "latin1.toml").write_bytes('id = "latin1"\ndescription = "caf\xe9"\n'.encode("latin-1"))
    assert data_main(["list"]) == 0
    out, err = capsys.readouterr()
    assert "tinyflores" in out and "flores200" in out and "broken" not in out
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2, err
    assert any(f"{mdir / 'broken.toml'}:3:" in w and "languages" in w for w in warnings), err
    assert any(f"{mdir / 'latin1.toml'}:2:" in w and "UTF-8" in w for w in warnings), err


# ---------------------------------------------------------------- what unpacking may replace
def test_unpack_never_replaces_what_mt_data_did_not_unpack(env):
    """`--dest .` with a folder of the archive's top-level name: that folder is the user's, not ours to delete."""
    tmp, mdir = env
    write_manifest(mdir, "http://127.0.0.1:9/unused.tar.gz")
    dest = manifests.default_dest("tinyflores")
    mine = dest / "tinyflores_dataset" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my notes\n")
    archive = tmp / "copy.tar.gz"
    archive.write_bytes(ARCHIVE)
    with pytest.raises(UserError, match="tinyflores_dataset already exists and was not unpacked by mt-data"):
        manifests.register("tinyflores", archive, progress=False)
    assert mine.read_text() == "my notes\n"
    mine.parent.rename(tmp / "moved")
    data = manifests.register("tinyflores", archive, progress=False)  # now ours: a second unpack may replace it
    marker = dest / f".{archive.name}.unpacked"  # first line: sha256 of what was unpacked; then what it placed
    assert marker.read_text().splitlines() == [SHA, "tinyflores_dataset"]
    marker.write_text("0" * 64 + "\ntinyflores_dataset\n")  # as after a new version of the archive: unpack again
    assert manifests.register("tinyflores", archive, progress=False) == data
    assert marker.read_text().splitlines()[0] == SHA and not (data / "notes.txt").exists()
