"""The load generator as a client: with --retry it sends a refused call again
with the same key, after the Retry-After the api asked for, or 100 ms when
the answer had none; in open loop it starts every purchase scheduled before
the end of the run, even when it was held up past it. Run against a stand-in for the api's two purchase calls
that refuses each key's first checkout, so the retry is seen on the wire.
(The store itself is driven by loadgen in the benchmarks, BENCHMARKS.md.)"""

import contextlib
import http.server
import json
import os
import signal
import statistics
import subprocess
import threading
import time
import uuid

import pytest

from harness import BUILD_DIR

LOADGEN = os.path.join(BUILD_DIR, "tests", "loadgen")


@contextlib.contextmanager
def serving(server):
    """Runs server in a thread for the block's duration."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class RefusingOnce(http.server.ThreadingHTTPServer):
    """Answers each key's first POST /checkout/KEY with 503 (and Retry-After
    when retry_after is set; unless refuse_first is False), the second with a
    payment id; every webhook
    with order 1. Keeps when each checkout call came, by key."""

    def __init__(self, retry_after, refuse_first=True):
        self.retry_after = retry_after
        self.refuse_first = refuse_first
        self.calls = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        if self.path.startswith("/checkout/"):
            with server.lock:
                calls = server.calls.setdefault(self.path, [])
                calls.append(time.monotonic())
                first = len(calls) == 1
            if first and server.refuse_first:
                self.answer(503, "Too many purchases in progress; retry in a moment\n",
                            server.retry_after)
            else:
                self.answer(200, str(uuid.uuid4()))
        else:
            self.answer(200, "1")

    def answer(self, status, body, retry_after=None):
        data = body.encode()
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("retry_after,least,most", [(1, 0.95, 1.8), (None, 0.09, 0.6)],
                         ids=["retry-after-1s", "no-retry-after"])
def test_loadgen_retries_a_refused_checkout_after_the_delay_the_api_asked_for(
        tmp_path, retry_after, least, most):
    server = RefusingOnce(retry_after)
    with serving(server):
        report = tmp_path / "report.json"
        out = subprocess.run([LOADGEN, "--url", f"http://127.0.0.1:{server.server_port}",
                              "--concurrency", "1", "--duration", "6", "--retry", "10",
                              "--json", str(report)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    checkout = json.loads(report.read_text())["series"]["checkout"]
    assert checkout["errors"] == 0 and checkout["retries"] == len(server.calls) >= 1, checkout
    gaps = []
    for path, calls in server.calls.items():
        assert len(calls) == 2, (path, calls)
        gaps.append(calls[1] - calls[0])
    # Never sooner than asked; the typical retry no later than the bound (the
    # median, so that one stall of the host does not decide it).
    assert len(gaps) >= 3 and min(gaps) >= least and statistics.median(gaps) <= most, gaps


def test_an_open_loop_starts_every_purchase_scheduled_before_the_end_even_if_held_up(tmp_path):
    # Open loop: a purchase is due at its scheduled time, whatever the
    # generator was doing. Held up (here stopped) past the end of its run, it
    # must still start the purchases that fell due meanwhile, measured from
    # their schedule, not drop them.
    server = RefusingOnce(None, refuse_first=False)
    with serving(server):
        report = tmp_path / "report.json"
        proc = subprocess.Popen([LOADGEN, "--url", f"http://127.0.0.1:{server.server_port}",
                                 "--rate", "50", "--duration", "2", "--json", str(report)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(2.0)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    result = json.loads(report.read_text())
    assert result["started"] == 100, result
    # The ones held up waited about a second or more, from their schedule.
    checkout = result["series"]["checkout"]
    assert checkout["count"] == 100 and checkout["errors"] == 0, checkout
    assert checkout["max"] >= 900, checkout


class SoldOutOnce(http.server.ThreadingHTTPServer):
    """Answers the first checkout 409 (sold out), the others with a payment
    id; takes restock_s to answer the restock that follows."""

    request_queue_size = 256  # a burst of calls is queued, not refused

    def __init__(self, restock_s):
        self.restock_s = restock_s
        self.checkouts = 0
        self.restocks = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), SoldOutHandler)


class SoldOutHandler(Handler):
    def do_POST(self):
        server = self.server
        if self.path == "/restock":
            with server.lock:
                server.restocks += 1
            time.sleep(server.restock_s)
            self.answer(200, "Restocked successfully\n")
        elif self.path.startswith("/checkout/"):
            with server.lock:
                server.checkouts += 1
                first = server.checkouts == 1
            if first:
                self.answer(409, "Out of stock\n")
            else:
                self.answer(200, str(uuid.uuid4()))
        else:
            self.answer(200, "1")


def test_a_slow_restock_holds_back_no_purchase(tmp_path):
    # Sold out, the generator restocks; the restock taking 2 s must neither
    # delay the calls in flight nor the purchases falling due meanwhile.
    server = SoldOutOnce(2.0)
    with serving(server):
        report = tmp_path / "report.json"
        out = subprocess.run([LOADGEN, "--url", f"http://127.0.0.1:{server.server_port}",
                              "--rate", "50", "--duration", "3", "--json", str(report)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    result = json.loads(report.read_text())
    checkout = result["series"]["checkout"]
    assert result["sold_out"] == 1 and server.restocks == 1, result
    assert checkout["count"] == 149 and checkout["errors"] == 0, checkout
    # A 2 s wait for the restock would show in the calls due during it.
    assert checkout["max"] < 1000, checkout
