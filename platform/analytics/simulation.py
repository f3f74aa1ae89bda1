"""Bots that rate through the HTTP API, as a browser does (in the spirit of oTree's bots).

The simulated observer answers by a noisy perceptual distance: the trained
shift-tolerant LPIPS network (Ghildyal & Liu, ECCV 2022; weights from the PyPI wheel
``stlpips-pytorch``), which was fitted to human 2AFC judgements, with a logistic choice
rule. It only ever sees what a browser sees: the image URLs the API hands out. It lives in
``analytics`` because it scores images with ``analytics.dpl``; it talks to ``rating`` only
over HTTP.
"""

import io
import random
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
import requests
from PIL import Image


class SimulatedObserver:
    """Chooses the side whose DPL distance to the reference is smaller, with logistic noise.

    P(left) = sigmoid(sharpness · (d_right − d_left) / (d_right + d_left)); a
    lower sharpness is a noisier observer. A distance depends only on the two images, so
    each (reference, image) pair goes through the network once, however often it is shown.
    """

    def __init__(self, sharpness: float = 8.0, seed: int = 0):
        from analytics.dpl import load_dpl  # deferred: torch loads only when a bot rates

        self.net = load_dpl("stlpips-alex")
        self.sharpness = sharpness
        self.rng = np.random.default_rng(seed)
        self._distances: dict[tuple[str, str], float] = {}

    def choose(self, client: "ApiClient", trials: list[dict]) -> list[str]:
        """A side for each trial (dicts with ``reference``, ``left`` and ``right`` URLs)."""
        from analytics.fitting import compute_features  # deferred: torch, as above

        pairs = [(t["reference"], t[side]) for t in trials for side in ("left", "right")]
        new = sorted({pair for pair in pairs if pair not in self._distances})
        if new:
            refs = np.stack([client.image(ref) for ref, _ in new])
            shown = np.stack([client.image(url) for _, url in new])
            distances = compute_features(self.net, refs, shown) @ self.net.weights()
            self._distances.update(zip(new, distances.tolist(), strict=True))
        d = np.array([self._distances[pair] for pair in pairs]).reshape(-1, 2)
        contrast = (d[:, 1] - d[:, 0]) / (d[:, 1] + d[:, 0] + 1e-9)
        p_left = 1.0 / (1.0 + np.exp(-self.sharpness * contrast))
        return [
            "left" if u < p else "right"
            for u, p in zip(self.rng.random(len(p_left)), p_left, strict=False)
        ]


@dataclass
class BotResult:
    sessions: int = 0
    votes: int = 0
    completion_codes: list[str] = field(default_factory=list)


class ApiClient:
    """The rater API over HTTP; images are fetched once per URL, as a browser caches them."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()
        self._images: dict[str, np.ndarray] = {}

    def post(self, path: str, payload: dict) -> requests.Response:
        return self.http.post(f"{self.base_url}/api{path}", json=payload, timeout=30)

    def image(self, url: str) -> np.ndarray:
        if url not in self._images:
            response = self.http.get(f"{self.base_url}{url}", timeout=30)
            response.raise_for_status()
            self._images[url] = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
        return self._images[url]


def rate_one_session(
    client: ApiClient, slug: str, participant_id: str, observer: SimulatedObserver
) -> tuple[int, str | None]:
    """Run one rater from start to completion code. Returns (votes cast, code), or (0, None) when full."""
    response = client.post(
        f"/studies/{slug}/sessions",
        {"participant_id": participant_id, "tab_id": participant_id, "consent": True},
    )
    if response.status_code in (409, 410):
        return 0, None
    response.raise_for_status()
    session = response.json()
    todo = [trial for trial in session["trials"] if not trial["answered"]]
    if todo:
        sides = observer.choose(client, todo)
        for trial, side in zip(todo, sides, strict=False):
            vote = {
                "index": trial["index"],
                "triplet": trial["triplet"],
                "side": side,
                "client_id": str(uuid.uuid4()),
                "rt_ms": random.lognormvariate(7.0, 0.4),
                "tab_id": participant_id,
            }
            client.post(f"/sessions/{session['session']}/votes", vote).raise_for_status()
    finished = client.post(f"/sessions/{session['session']}/finish", {})
    finished.raise_for_status()
    return len(todo), finished.json()["completion_code"]


def simulate_raters(
    base_url: str, slug: str, raters: int, *, sharpness: float = 8.0, seed: int = 0
) -> BotResult:
    """Drive up to ``raters`` sessions; stops early when the study is full."""
    observer = SimulatedObserver(sharpness=sharpness, seed=seed)
    client = ApiClient(base_url)
    result = BotResult()
    for number in range(raters):
        votes, code = rate_one_session(
            client, slug, f"bot-{seed}-{number}-{uuid.uuid4().hex[:8]}", observer
        )
        if code is None:
            break
        result.sessions += 1
        result.votes += votes
        result.completion_codes.append(code)
    return result


class _QuietHandler(WSGIRequestHandler):
    # wsgiref writes headers and body separately; with Nagle on, each response
    # waits out the client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@contextmanager
def local_server():
    """Serve the Django app on a free loopback port for the length of the block; yields its URL."""
    from django.core.wsgi import get_wsgi_application  # deferred: only when a server starts

    server = make_server(
        "127.0.0.1",
        0,
        get_wsgi_application(),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
