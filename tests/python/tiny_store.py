"""A model store served from this machine: the tiny golden models as the `ffhq` set (and its
`clip` set) of a manifest of their own, on a local HTTP server. The library is pointed at it
with its documented variables: CLIPSHAPE_MANIFEST (the manifest), CLIPSHAPE_MODELS_MIRROR
(every file from BASE/<name>) and CLIPSHAPE_MODELS (the store directory).

Used by the fake-host tests (``serve``) and, as a script, by install/host-tests.sh's GUI tier
to prepare a mirror inside the trixie root and serve it:
  python3 tiny_store.py GOLDEN OUT_DIR      writes OUT_DIR/mirror/* and OUT_DIR/manifest.toml
  python3 tiny_store.py serve DIR URL_FILE  serves DIR on 127.0.0.1 until killed; its base URL
                                            goes into URL_FILE once it listens
"""

import hashlib
import http.server
import os
import shutil
import sys
import threading
import time

# manifest file name → file of the golden set
FILES = {
    "tiny_e4e.pt": "e4e.pt",
    "tiny_clip.pt": "clip_jit.pt",
    "bpe_simple_vocab_16e6.txt.gz": "bpe_simple_vocab_16e6.txt.gz",
    "mtcnn_pnet.pt": "face/mtcnn/pnet.pt",
    "mtcnn_rnet.pt": "face/mtcnn/rnet.pt",
    "mtcnn_onet.pt": "face/mtcnn/onet.pt",
}
LICENCES = {"tiny_e4e.pt": "Tiny e4e: test weights (random), free to use.",
            "tiny_clip.pt": "Tiny CLIP: test weights (random), free to use.",
            "bpe_simple_vocab_16e6.txt.gz": "MIT (OpenAI CLIP)."}
FFHQ_FILES = ["tiny_e4e.pt", "mtcnn_pnet.pt", "mtcnn_rnet.pt", "mtcnn_onet.pt"]
CLIP_FILES = ["tiny_clip.pt", "bpe_simple_vocab_16e6.txt.gz"]


def manifest_text(golden):
    out = ["schema = 1", ""]
    for name, rel in FILES.items():
        path = os.path.join(golden, rel)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        out += ['[files."%s"]' % name, 'urls = ["http://127.0.0.1:9/unused/%s"]' % name,
                "size = %d" % os.path.getsize(path), 'sha256 = "%s"' % digest,
                'licence = "%s"' % LICENCES.get(name, "MIT (facenet-pytorch)."), ""]
    out += ["[sets.clip]", 'description = "Tiny CLIP and its tokenizer"', "[sets.clip.files]",
            'clip = "tiny_clip.pt"', 'bpe = "bpe_simple_vocab_16e6.txt.gz"', "",
            "[sets.ffhq]", 'description = "Faces: the tiny test models"', 'requires = ["clip"]',
            "[sets.ffhq.files]", 'e4e = "tiny_e4e.pt"', 'mtcnn_pnet = "mtcnn_pnet.pt"',
            'mtcnn_rnet = "mtcnn_rnet.pt"', 'mtcnn_onet = "mtcnn_onet.pt"',
            "[sets.ffhq.domain]", 'name = "face"', "generator_size = 64",
            "frame = { top = 0, left = 0, height = 64, width = 64 }",
            "encoder_input = { height = 64, width = 64 }", 'align = "ffhq"',
            'default_layer = "convs.3"', "default_lambda2 = 0.05",
            'prompts = ["face with big nose", "a round face"]', ""]
    return "\n".join(out)


def set_bytes(golden, names):
    return sum(os.path.getsize(os.path.join(golden, FILES[n])) for n in names)


def prepare(golden, out_dir):
    """OUT_DIR/mirror/<name> for every file, OUT_DIR/manifest.toml → (mirror, manifest)."""
    mirror = os.path.join(out_dir, "mirror")
    os.makedirs(mirror, exist_ok=True)
    for name, rel in FILES.items():
        shutil.copyfile(os.path.join(golden, rel), os.path.join(mirror, name))
    manifest = os.path.join(out_dir, "manifest.toml")
    with open(manifest, "w") as f:
        f.write(manifest_text(golden))
    return mirror, manifest


class Server:
    """A threaded HTTP server of ``directory`` on 127.0.0.1 (a free port); ``delay`` seconds
    between 64 KiB chunks slows a transfer down so that it can be cancelled midway.
    ``requests`` lists the paths asked for."""

    def __init__(self, directory, delay=0.0):
        self.delay = delay
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=directory, **kw)

            def log_message(self, *a):
                pass

            def copyfile(self, source, outputfile):
                server.requests.append(self.path)
                while True:
                    chunk = source.read(64 * 1024)
                    if not chunk:
                        return
                    outputfile.write(chunk)
                    if server.delay:
                        time.sleep(server.delay)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        server = Server(sys.argv[2])
        with open(sys.argv[3] + ".tmp", "w") as f:
            f.write(server.url + "\n")
        os.rename(sys.argv[3] + ".tmp", sys.argv[3])
        server.thread.join()
    elif len(sys.argv) == 3:
        print("\n".join(prepare(sys.argv[1], sys.argv[2])))
    else:
        sys.exit("usage: tiny_store.py GOLDEN OUT_DIR | tiny_store.py serve DIR URL_FILE")
