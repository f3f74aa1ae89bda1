/* The twoafc rater page: instructions → trials → sending → completion code.
 *
 * Everything comes from the JSON API (rating/api.py). Votes are queued in
 * localStorage and sent one by one until the server acknowledges them, so a
 * flaky connection or a reload loses nothing; the page never waits for the
 * network between trials.
 *
 * Test hooks: body[data-state] is loading | instructions | trial | sending |
 * done | error; the shown trial is #trial[data-index]; body[data-pending] is
 * the number of votes not yet acknowledged.
 */
(() => {
  "use strict";

  const root = document.getElementById("rater");
  const cfg = {
    slug: root.dataset.slug,
    api: (root.dataset.apiBase || "/api").replace(/\/+$/, ""),
    participant: root.dataset.participantId || "",
    patchSize: parseInt(root.dataset.patchSize, 10) || 64,
  };

  const PRELOAD_AHEAD = 3;   // trials whose images load in the background
  const LOAD_TRIES = 4;      // attempts per image before giving up
  const MAX_ZOOM = 4;        // CSS pixels per image pixel, at most
  const BLANK_MS = 250;      // grey between trials: at least this long after an answer
  const REQUEST_TIMEOUT_MS = 20000;
  const NARROW = "(max-width: 640px)"; // the stacked layout; same query as rater.css
  const KEYS = {
    ArrowLeft: "left", KeyA: "left", a: "left", A: "left",
    ArrowRight: "right", KeyL: "right", l: "right", L: "right",
  };

  const $ = (id) => document.getElementById(id);
  const stage = $("trial");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  const state = {
    token: null,
    trials: [],
    current: null,     // the trial on screen (or being prepared)
    shownAt: 0,        // performance.now() of the frame that first painted it
    accepting: false,  // true from that frame until the answer
    answeredAt: 0,
    queue: [],         // votes not yet acknowledged, oldest first
    failures: 0,       // consecutive failed sends, for the backoff
    pumping: false,
    retryTimer: null,
    finishing: false,
    finishInFlight: false,
    patchCss: 0,
  };

  // --- small helpers -------------------------------------------------------------

  const storage = {
    get(key) {
      try { return JSON.parse(localStorage.getItem(key)); } catch { return null; }
    },
    set(key, value) {
      try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* private mode: memory only */ }
    },
    remove(key) {
      try { localStorage.removeItem(key); } catch { /* ignore */ }
    },
  };

  function uuid() {
    const c = typeof crypto !== "undefined" ? crypto : null;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    const b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function participantId() {
    if (cfg.participant) return cfg.participant;
    const query = new URLSearchParams(location.search);
    for (const name of ["PROLIFIC_PID", "workerId", "participant"]) {
      if (query.get(name)) return query.get(name);
    }
    // Anonymous link: one random id per study and browser, so a reload resumes.
    const key = `twoafc:participant:${cfg.slug}`;
    let id = storage.get(key);
    if (typeof id !== "string" || !id) {
      id = `anon-${uuid()}`;
      storage.set(key, id);
    }
    return id;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status; // 0: no answer (network, timeout)
    }
  }

  const retryable = (status) => status === 0 || status === 408 || status === 429 || status >= 500;

  function detailOf(body, status) {
    const detail = body && body.detail;
    if (typeof detail === "string" && detail) return detail;
    if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    return `The server answered ${status}.`;
  }

  async function api(method, path, body) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(cfg.api + path, {
        method,
        headers: body === undefined ? {} : { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
        signal: controller.signal,
      });
    } catch {
      throw new ApiError(0, "Could not reach the server. Check your connection.");
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    try { data = await response.json(); } catch { /* empty or not JSON */ }
    if (!response.ok) throw new ApiError(response.status, detailOf(data, response.status));
    return { status: response.status, data };
  }

  // --- screens ---------------------------------------------------------------------

  const SCREENS = ["loading", "instructions", "trial", "sending", "done", "error"];

  function show(screen, bodyState = screen) {
    for (const name of SCREENS) $(`screen-${name}`).hidden = name !== screen;
    document.body.dataset.state = bodyState;
  }

  function showError(message, canReload) {
    state.accepting = false;
    state.current = null;
    $("error-text").textContent = message;
    $("reload").hidden = !canReload;
    show("error");
  }

  function updateBanner() {
    $("offline").hidden = navigator.onLine !== false && state.failures === 0;
  }

  function updatePending() {
    document.body.dataset.pending = String(state.queue.length);
    if (state.finishing) {
      $("sending-text").textContent = state.queue.length
        ? `${state.queue.length} answer(s) still to send. Please keep this page open.`
        : "Please keep this page open.";
    }
  }

  // --- images --------------------------------------------------------------------

  async function loadImage(url) {
    for (let attempt = 1; ; attempt++) {
      const img = new Image();
      img.alt = "";
      img.draggable = false;
      img.src = url;
      try {
        await img.decode();
        return img;
      } catch (error) {
        if (attempt >= LOAD_TRIES) throw new Error(`Could not load an image (${url}).`);
        await sleep(400 * 2 ** attempt);
      }
    }
  }

  const preloaded = new Map(); // url → Promise<decoded HTMLImageElement>

  function preload(url) {
    if (!preloaded.has(url)) {
      const promise = loadImage(url);
      promise.catch(() => preloaded.delete(url));
      preloaded.set(url, promise);
    }
    return preloaded.get(url);
  }

  function preloadAfter(trial) {
    const upcoming = state.trials.filter((t) => !t.answered && t !== trial).slice(0, PRELOAD_AHEAD);
    for (const t of upcoming) [t.reference, t.left, t.right].forEach((url) => preload(url).catch(() => {}));
  }

  async function imageFor(url) {
    const img = await preload(url);
    preloaded.delete(url);
    // The same reference can come back in a later trial while this element is still on screen.
    return img.isConnected ? loadImage(url) : img;
  }

  // --- layout: integer zoom that fits the screen --------------------------------------

  function fit() {
    if ($("screen-trial").hidden) return;
    const dpr = window.devicePixelRatio || 1;
    const ps = cfg.patchSize;
    const stacked = window.matchMedia(NARROW).matches;
    const across = stacked ? 1 : 3;
    const down = stacked ? 3 : 1;
    if (!state.patchCss) {
      state.patchCss = ps;
      root.style.setProperty("--patch", `${ps}px`);
    }
    // What the stage needs besides the patches (captions, borders, gaps), at the current size.
    const box = stage.getBoundingClientRect();
    const extraW = box.width - across * state.patchCss;
    const extraH = box.height - down * state.patchCss;
    const margin = 8;
    const availW = document.documentElement.clientWidth - 2 * margin - extraW;
    const availH = window.innerHeight - (box.top + window.scrollY) - margin - extraH;
    // Zoom in whole device pixels per image pixel, so every image pixel is the same size.
    const most = Math.max(1, Math.round(MAX_ZOOM * dpr));
    const least = Math.max(1, Math.round(dpr));
    const fits = Math.floor((Math.min(availW / across, availH / down) * dpr) / ps);
    const zoom = Math.max(least, Math.min(most, fits));
    state.patchCss = (ps * zoom) / dpr;
    root.style.setProperty("--patch", `${state.patchCss}px`);
    root.dataset.zoom = String(zoom / dpr);
  }

  // --- trials --------------------------------------------------------------------

  function adopt(session) {
    state.token = session.session;
    state.trials = session.trials.slice().sort((a, b) => a.index - b.index);
  }

  function updateProgress(trial) {
    const total = state.trials.length;
    const k = trial.index + 1;
    const bar = $("progressbar");
    bar.setAttribute("aria-valuemax", String(total));
    bar.setAttribute("aria-valuenow", String(k));
    bar.setAttribute("aria-valuetext", `Trial ${k} of ${total}`);
    bar.firstElementChild.style.width = `${(100 * (k - 1)) / total}%`;
    $("progress-text").textContent = `Trial ${k} of ${total}`;
  }

  async function nextTrial() {
    const trial = state.trials.find((t) => !t.answered);
    if (!trial) {
      finish();
      return;
    }
    state.current = trial;
    state.accepting = false;
    show("trial", "loading");
    stage.style.visibility = "hidden";
    delete stage.dataset.index;
    fit();
    preloadAfter(trial);

    const waitTimer = setTimeout(() => { $("trial-wait").hidden = false; }, 500);
    let images;
    try {
      [images] = await Promise.all([
        Promise.all([trial.left, trial.reference, trial.right].map(imageFor)),
        sleep(Math.max(0, BLANK_MS - (performance.now() - state.answeredAt))),
      ]);
    } catch (error) {
      clearTimeout(waitTimer);
      if (state.current === trial) {
        showError(`${error.message} Please check your connection and reload the page.`, true);
      }
      return;
    }
    clearTimeout(waitTimer);
    if (state.current !== trial) return; // superseded
    $("trial-wait").hidden = true;

    const slots = stage.querySelectorAll(".patch");
    images.forEach((img, i) => slots[i].replaceChildren(img));
    updateProgress(trial);
    stage.dataset.index = String(trial.index);
    stage.style.visibility = "";
    requestAnimationFrame(() => {
      if (state.current !== trial) return;
      state.shownAt = performance.now();
      state.accepting = true;
      document.body.dataset.state = "trial";
    });
  }

  function answer(side) {
    const trial = state.current;
    if (!state.accepting || !trial || trial.answered) return;
    state.accepting = false; // one answer per trial
    const now = performance.now();
    trial.answered = true;
    state.answeredAt = now;
    enqueue({
      index: trial.index,
      triplet: trial.triplet,
      side,
      client_id: uuid(),
      rt_ms: now - state.shownAt,
    });
    nextTrial();
  }

  // --- the vote queue --------------------------------------------------------------

  const queueKey = () => `twoafc:votes:${state.token}`;

  function saveQueue() {
    if (state.queue.length) storage.set(queueKey(), state.queue);
    else storage.remove(queueKey());
    updatePending();
  }

  function loadQueue() {
    const saved = storage.get(queueKey());
    state.queue = Array.isArray(saved) ? saved.filter((v) => v && v.client_id) : [];
    const queued = new Set(state.queue.map((v) => v.index));
    for (const t of state.trials) if (queued.has(t.index)) t.answered = true;
    updatePending();
  }

  function enqueue(vote) {
    state.queue.push(vote);
    saveQueue();
    pump();
  }

  function backoffMs() {
    const base = Math.min(30000, 500 * 2 ** Math.min(state.failures, 6));
    return base * (0.75 + Math.random() * 0.5);
  }

  function scheduleRetry() {
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(() => {
      state.retryTimer = null;
      pump();
    }, backoffMs());
  }

  async function pump() {
    if (state.pumping || state.retryTimer) return;
    state.pumping = true;
    try {
      while (state.queue.length) {
        const vote = state.queue[0];
        try {
          await api("POST", `/sessions/${state.token}/votes`, vote); // 201 recorded, 200 replay
          state.failures = 0;
        } catch (error) {
          if (retryable(error.status)) {
            state.failures += 1;
            updateBanner();
            scheduleRetry();
            return;
          }
          // Refused for good (not assigned, session ended, already answered): drop it.
          console.warn(`twoafc: vote for trial ${vote.index} dropped (${error.status}): ${error.message}`);
        }
        state.queue.shift();
        saveQueue();
        updateBanner();
      }
    } finally {
      state.pumping = false;
    }
    if (state.finishing) finishNow();
  }

  // --- finishing -----------------------------------------------------------------

  function finish() {
    state.finishing = true;
    state.current = null;
    state.accepting = false;
    show("sending");
    updatePending();
    if (!state.queue.length) finishNow();
    else pump();
  }

  async function finishNow() {
    if (state.finishInFlight || state.queue.length) return;
    state.finishInFlight = true; // stays set once the code is shown: one finish only
    let data;
    try {
      ({ data } = await api("POST", `/sessions/${state.token}/finish`));
    } catch (error) {
      if (retryable(error.status)) {
        state.failures += 1;
        updateBanner();
        setTimeout(() => {
          state.finishInFlight = false;
          finishNow();
        }, backoffMs());
        return;
      }
      state.finishInFlight = false;
      if (error.status === 409 && (await resumeUnanswered())) return;
      showError(error.message, false);
      return;
    }
    state.failures = 0;
    updateBanner();
    storage.remove(queueKey());
    $("completion-code").textContent = data.completion_code;
    show("done");
  }

  // The server is missing votes (one was refused): show those trials again.
  async function resumeUnanswered() {
    try {
      const { data } = await api("GET", `/sessions/${state.token}`);
      if (data.finished || data.trials.every((t) => t.answered)) return false;
      adopt(data);
      state.finishing = false;
      nextTrial();
      return true;
    } catch {
      return false;
    }
  }

  // --- start -----------------------------------------------------------------------

  function listen() {
    document.addEventListener("keydown", (event) => {
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      const side = KEYS[event.code] || KEYS[event.key];
      if (!side || document.body.dataset.state === "instructions") return;
      if (!$("screen-trial").hidden) event.preventDefault(); // no scrolling on arrows
      if (event.repeat) return;
      answer(side);
    });
    for (const button of stage.querySelectorAll(".choice")) {
      button.addEventListener("click", () => answer(button.dataset.side));
    }
    $("start").addEventListener("click", () => {
      if (document.body.dataset.state === "instructions") nextTrial();
    });
    $("reload").addEventListener("click", () => location.reload());
    window.addEventListener("resize", fit);
    window.addEventListener("online", () => {
      updateBanner();
      clearTimeout(state.retryTimer);
      state.retryTimer = null;
      pump();
    });
    window.addEventListener("offline", updateBanner);
  }

  async function boot() {
    listen();
    updateBanner();
    let session;
    try {
      ({ data: session } = await api(
        "POST",
        `/studies/${encodeURIComponent(cfg.slug)}/sessions`,
        { participant_id: participantId() },
      ));
    } catch (error) {
      showError(error.message, retryable(error.status));
      return;
    }
    adopt(session);
    loadQueue();
    if (state.queue.length) pump();
    if (session.finished || state.trials.every((t) => t.answered)) {
      finish();
      return;
    }
    const done = state.trials.filter((t) => t.answered).length;
    $("trial-count").textContent = String(state.trials.length);
    $("start").textContent = done ? `Continue (${done} of ${state.trials.length} done)` : "Start";
    preloadAfter(null);
    show("instructions");
    $("start").focus();
  }

  boot();
})();
