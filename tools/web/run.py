"""Runs Tessera's kernels in a headless Chromium on WebGPU and prints the report.

    cargo build --release --target wasm32-unknown-unknown          (in tools/web)
    wasm-bindgen --target web --out-dir pkg \\
        target/wasm32-unknown-unknown/release/tessera_web_smoke.wasm
    python3 run.py [--chromium /usr/bin/chromium] [--timeout 300] [--bench]

Serves the repository on localhost, opens index.html in Chromium with WebGPU enabled (on a
machine without a GPU Chromium's WebGPU runs on its SwiftShader Vulkan), and waits for the page
to POST its report. Exits 0 when every check passed.
"""

import argparse
import http.server
import os
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
# The repository: the page fetches the test fixtures' checkpoints.
ROOT = os.path.dirname(os.path.dirname(HERE))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chromium", default="chromium")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--bench", action="store_true", help="also time a 512³ matmul")
    parser.add_argument("--no-webgpu", action="store_true",
                        help="run Chromium without WebGPU: the page must report the missing "
                             "adapter clearly")
    args = parser.parse_args()
    result = {}
    done = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=ROOT, **k)

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            result["text"] = body
            self.send_response(204)
            self.end_headers()
            done.set()

        def log_message(self, *a):
            pass

        def guess_type(self, path):
            return "application/wasm" if str(path).endswith(".wasm") else super().guess_type(path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/tools/web/index.html"
    if args.bench:
        url += "?bench"
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [args.chromium, "--headless=new", "--no-sandbox", f"--user-data-dir={profile}"]
            + (["--disable-features=WebGPU"] if args.no_webgpu else
               ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
                "--use-webgpu-adapter=swiftshader", "--disable-gpu-sandbox"])
            + ["--remote-debugging-port=0", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        finished = done.wait(args.timeout)
        browser.kill()
        _, err = browser.communicate()
    server.shutdown()
    if not finished:
        print(f"no report within {args.timeout} s; Chromium said:\n{err.decode()[-3000:]}")
        return 2
    status, _, text = result["text"].partition("\n")
    print(text)
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
