/* The twoafc rater page.
 *
 * consent → (the session starts) → instructions (with an example) → practice → "practice
 * done" → trials, with a break every `break_every` real trials → debrief → sending →
 * completion code (→ Prolific redirect or MTurk submit). Nothing is claimed or stored on
 * the server before the rater agrees: the page only asks whether this participant has a
 * session already (a reload, a return), and one who has goes straight on ("welcome back").
 * Declining adds one to the study's count of declines, and nothing else.
 *
 * Everything comes from the JSON API (rating/api.py). Votes are queued in localStorage and
 * sent one by one until the server acknowledges them, so a flaky connection or a reload
 * loses nothing; the page never waits for the network between trials. The queue is shared
 * by the tabs of a browser (read and written afresh on every change), so votes one tab
 * queued are sent by whichever tab holds the session. The completion code, the Prolific
 * redirect and the MTurk submit only happen once the server has acknowledged every vote
 * and answered `finish` with 200.
 *
 * Images: those of the next few trials (`data-preload-ahead`, 5) load in the background,
 * and every load is retried with backoff, at once when the browser comes back online: a
 * dropped connection shows a banner, never an error or a file name, and the page goes on
 * by itself. Each slot gets its own <img> (a sentinel shows the reference twice).
 * A response counts only once the three images have been painted and on screen for the
 * study's `min_display_ms`; an earlier press is ignored, and the page says why.
 *
 * Tabs: one tab holds a session. Another tab of the same participant shows "Already open"
 * with "Continue here", which takes the session over: the other tab stops at once (told
 * over a BroadcastChannel in the same browser, or by its next vote being refused). A tab
 * that closes gives the session back (a beacon on pagehide), so reopening works at once.
 *
 * Display modes: side by side, or flicker (AIC-3 style): A and B each alternate, in
 * phase, between their own image and the reference, `flicker_hz` switches per second;
 * the centre shows the reference still.
 *
 * Test hooks: body[data-state] is loading | consent | declined | instructions | preview |
 * resume | trial | practice-done | break | debrief | sending | unconfirmed | done |
 * screened-out | other-tab | completed | full | error; the shown trial is
 * #trial[data-index] (and data-practice), with data-ready once an answer counts;
 * body[data-pending] is the number of votes not yet acknowledged, body[data-ignored] the
 * number of presses ignored as too early.
 */
(() => {
  "use strict";

  const root = document.getElementById("rater");
  const query = new URLSearchParams(location.search);
  const MARKET_PARAMS = [
    "PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "assignmentId", "hitId", "workerId", "turkSubmitTo",
  ];
  const MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE";

  function readJson(id) {
    const element = document.getElementById(id);
    if (!element) return null;
    try { return JSON.parse(element.textContent); } catch { return null; }
  }

  // The market's query parameters: as the server read them, else straight from the URL.
  function marketParams() {
    const fromServer = readJson("twoafc-market");
    if (fromServer && typeof fromServer === "object" && !Array.isArray(fromServer)) return fromServer;
    const market = {};
    for (const name of MARKET_PARAMS) if (query.get(name)) market[name] = query.get(name);
    return market;
  }

  const intOr = (value, fallback) => (Number.isInteger(parseInt(value, 10)) ? parseInt(value, 10) : fallback);

  const cfg = {
    slug: root.dataset.slug,
    api: (root.dataset.apiBase || "/api").replace(/\/+$/, ""),
    participant: root.dataset.participantId || "",
    patchSize: parseInt(root.dataset.patchSize, 10) || 64,
    zoom: parseInt(root.dataset.zoom, 10) || 4,
    mode: root.dataset.displayMode === "flicker" ? "flicker" : "side-by-side",
    flickerHz: parseFloat(root.dataset.flickerHz) || 8,
    breakEvery: parseInt(root.dataset.breakEvery, 10) || 0,
    minDisplayMs: Math.max(0, intOr(root.dataset.minDisplayMs, 200)),
    preloadAhead: Math.max(1, intOr(root.dataset.preloadAhead, 5)),
    preview: root.dataset.preview === "1" || query.get("assignmentId") === MTURK_PREVIEW,
    market: marketParams(),
  };

  const IMAGE_RETRY_MAX_MS = 5000; // longest wait between two tries of an image
  const SLOW_IMAGES_MS = 500;  // "Loading images…" shows when a trial waits this long
  const STUCK_MS = 20000;      // online, yet no images for this long: offer a reload too
  const BLANK_MS = 250;        // grey between trials: at least this long after an answer
  const TOO_SOON_SHOWN_MS = 1500; // how long "too quick" stays up
  const REQUEST_TIMEOUT_MS = 20000;
  const CONFIRM_RETRIES = 3; // failed retries while finishing before the code (or a notice) shows
  const REDIRECT_MS = 1500;  // the code stays on screen this long before Prolific / MTurk
  const SCREENED_OUT_REDIRECT_MS = 5000; // longer: there is more to read
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
    tab: "",
    participant: "",
    display: { mode: cfg.mode, hz: cfg.flickerHz, zoom: cfg.zoom, minDisplayMs: cfg.minDisplayMs },
    breakEvery: cfg.breakEvery,
    trials: [],
    practice: [],      // the practice trials, in order
    real: [],          // the others, in order: progress counts these
    current: null,     // the trial on screen (or being prepared)
    lastAnswered: null, // the trial answered just before: decides practice-done and breaks
    shownAt: 0,        // performance.now() of the frame that first painted it
    painted: false,    // a frame with the trial's three images has been drawn
    accepting: false,  // true from that frame until the answer
    answeredAt: 0,
    ignored: 0,        // presses ignored as too early (a test hook)
    tooSoonTimer: null, // hides the "too quick" note again
    timers: {},        // named timeouts of the trial on screen
    flicker: null,     // { raf } while a flicker trial is on screen
    queue: [],         // votes not yet acknowledged, oldest first (a copy of the shared queue)
    failures: 0,       // consecutive failed sends, for the backoff
    pumping: false,
    retryTimer: null,
    starting: false,   // a start or a take-over is on its way
    finishing: false,
    finishInFlight: false,
    finishFailures: 0, // failed attempts (votes or finish) since finishing began
    unconfirmedShown: false,
    confirmed: false,
    stopped: false,    // another tab has the session: this page does nothing more
    patchCss: 0,
  };

  // --- small helpers -------------------------------------------------------------

  const storage = {
    ok: (() => {
      try {
        localStorage.setItem("twoafc:probe", "1");
        localStorage.removeItem("twoafc:probe");
        return true;
      } catch { return false; }
    })(),
    get(key) {
      try { return JSON.parse(localStorage.getItem(key)); } catch { return null; }
    },
    set(key, value) {
      try {
        localStorage.setItem(key, JSON.stringify(value));
        return true;
      } catch { return false; } // private mode or full: the caller keeps it in memory
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

  // The crowd id from the URL, else this browser's anonymous id for the study. A new
  // anonymous id is only made (and kept in localStorage) once the rater has agreed.
  let anonymousId = "";
  function participantId(create) {
    if (cfg.participant) return cfg.participant;
    for (const name of ["PROLIFIC_PID", "workerId", "participant"]) {
      if (query.get(name)) return query.get(name);
    }
    const key = `twoafc:participant:${cfg.slug}`;
    const saved = storage.get(key);
    if (typeof saved === "string" && saved) return saved;
    if (!create) return "";
    if (!anonymousId) {
      anonymousId = `anon-${uuid()}`;
      storage.set(key, anonymousId);
    }
    return anonymousId;
  }

  // One id per browser tab, kept across reloads (sessionStorage). A duplicated tab inherits
  // its opener's sessionStorage, so ask the other open pages whether the id is taken.
  const TAB_KEY = "twoafc:tab";
  const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("twoafc:tabs") : null;

  async function tabId() {
    let id = null;
    try { id = sessionStorage.getItem(TAB_KEY); } catch { /* no storage */ }
    if (id && channel) {
      const taken = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), 150);
        channel.onmessage = (event) => {
          if (event.data && event.data.type === "mine" && event.data.tab === id) {
            clearTimeout(timer);
            resolve(true);
          }
        };
        channel.postMessage({ type: "whose", tab: id });
      });
      if (taken) id = null;
    }
    if (!id) {
      id = uuid();
      try { sessionStorage.setItem(TAB_KEY, id); } catch { /* memory only */ }
    }
    if (channel) {
      channel.onmessage = (event) => {
        const data = event.data || {};
        if (data.type === "whose" && data.tab === id) channel.postMessage({ type: "mine", tab: id });
        // Another tab of this browser chose "continue here" for our session: stop at once.
        if (data.type === "taken" && data.slug === cfg.slug && data.participant === state.participant
            && data.tab !== id && state.token && !state.stopped) {
          showOtherTab();
        }
      };
    }
    return id;
  }

  class ApiError extends Error {
    constructor(status, message, reason) {
      super(message);
      this.status = status; // 0: no answer (network, timeout)
      this.reason = reason || "";
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
    try { data = await response.json(); } catch { /* empty (204) or not JSON */ }
    if (!response.ok) {
      const reason = data && typeof data.reason === "string" ? data.reason : "";
      throw new ApiError(response.status, detailOf(data, response.status), reason);
    }
    return { status: response.status, data };
  }

  function beacon(path, body) {
    if (!navigator.sendBeacon) return;
    try {
      navigator.sendBeacon(cfg.api + path, new Blob([JSON.stringify(body)], { type: "application/json" }));
    } catch { /* best effort */ }
  }

  const safeUrl = (url) => typeof url === "string" && /^https?:\/\//i.test(url);

  // --- screens ---------------------------------------------------------------------

  const SCREENS = [
    "loading", "consent", "declined", "instructions", "resume", "trial", "practice-done",
    "break", "debrief", "sending", "done", "other-tab", "completed", "error",
  ];

  function show(screen, bodyState = screen) {
    for (const name of SCREENS) $(`screen-${name}`).hidden = name !== screen;
    document.body.dataset.state = bodyState;
    const primary = $(`screen-${screen}`).querySelector("[data-autofocus]:not([hidden])");
    if (primary && !primary.closest("[hidden]")) primary.focus();
    else if (screen !== "trial" && document.activeElement && document.activeElement !== document.body) {
      document.activeElement.blur();
    }
  }

  function clearTrialTimers() {
    for (const timer of Object.values(state.timers)) clearTimeout(timer);
    state.timers = {};
  }

  function halt() {
    state.accepting = false;
    state.current = null;
    clearTrialTimers();
    stopFlicker();
  }

  function showError(message, canReload, bodyState = "error") {
    halt();
    $("error-text").textContent = message;
    $("reload").hidden = !canReload;
    show("error", bodyState);
  }

  function showOtherTab() {
    state.stopped = true;
    halt();
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    $("other-tab-status").textContent = "";
    show("other-tab");
  }

  // Failing image loads (url → true) and failed sends both mean a connection problem.
  const failingImages = new Set();

  function updateBanner() {
    const offline = navigator.onLine === false;
    const trouble = offline || state.failures > 0 || failingImages.size > 0;
    $("offline-text").textContent = offline ? "You are offline." : "The connection is having trouble.";
    $("offline").hidden = !trouble;
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

  // Image loads waiting to try again; coming back online wakes them all at once.
  const waitingForNetwork = new Set();

  function waitToRetry(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        waitingForNetwork.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      waitingForNetwork.add(done);
    });
  }

  function networkBack() {
    for (const done of [...waitingForNetwork]) done();
  }

  function newImage(url) {
    const img = new Image();
    img.alt = "";
    img.draggable = false;
    img.src = url;
    return img;
  }

  // Load and decode an image, trying again (with backoff) until it works: a dropped
  // connection only delays it. The file's address is never shown to the rater.
  async function fetchImage(url) {
    for (let attempt = 0; ; attempt++) {
      const img = newImage(url);
      try {
        await img.decode();
        if (failingImages.delete(url)) imagesChanged();
        return img;
      } catch {
        if (!failingImages.has(url)) {
          failingImages.add(url);
          imagesChanged();
        }
      }
      const backoff = Math.min(IMAGE_RETRY_MAX_MS, 500 * 2 ** Math.min(attempt, 8));
      await waitToRetry(backoff * (0.75 + Math.random() * 0.5));
    }
  }

  // url → Promise of a decoded image, kept for the whole session: it holds the image in
  // the page's memory, so every later copy of it is drawn at once, even offline.
  const preloaded = new Map();

  function preload(url) {
    let promise = preloaded.get(url);
    if (!promise) {
      promise = fetchImage(url);
      preloaded.set(url, promise);
    }
    return promise;
  }

  function preloadAfter(trial) {
    const upcoming = state.trials.filter((t) => !t.answered && t !== trial).slice(0, cfg.preloadAhead);
    for (const t of upcoming) [t.reference, t.left, t.right].forEach(preload);
  }

  // A fresh <img> for one slot: the same image can fill two slots (a sentinel shows the
  // reference on one side), and one element can only be in one place.
  async function slotImage(url) {
    const kept = await preload(url);
    const img = kept.cloneNode();
    try {
      await img.decode();
      return img;
    } catch {
      return fetchImage(url); // dropped from memory meanwhile: load it again
    }
  }

  function imagesChanged() {
    updateBanner();
    updateWaitText();
  }

  function updateWaitText() {
    if ($("trial-wait").hidden) return;
    $("wait-text").textContent = failingImages.size
      ? "Waiting for the connection… The study goes on by itself as soon as it is back."
      : "Loading images…";
  }

  // --- flicker: both sides alternate with the reference, in phase ---------------------

  function startFlicker(trial, leftImg, rightImg) {
    stopFlicker();
    const halfPeriod = 1000 / Math.max(0.1, state.display.hz); // one image change per half period
    // The src swaps only ever name images that are decoded and kept (`preloaded`), so the
    // browser shows them synchronously, without a reload or a blank frame.
    const sources = [[trial.left, trial.right], [trial.reference, trial.reference]];
    let phase = 0;
    const flicker = { raf: 0 };
    const tick = (now) => {
      if (state.flicker !== flicker) return;
      const next = Math.floor(Math.max(0, now - state.shownAt) / halfPeriod) % 2;
      if (next !== phase) {
        phase = next;
        leftImg.src = sources[phase][0];
        rightImg.src = sources[phase][1];
        stage.dataset.phase = phase ? "reference" : "distorted";
      }
      flicker.raf = requestAnimationFrame(tick);
    };
    state.flicker = flicker;
    stage.dataset.phase = "distorted";
    flicker.raf = requestAnimationFrame(tick);
  }

  function stopFlicker() {
    if (state.flicker) cancelAnimationFrame(state.flicker.raf);
    state.flicker = null;
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
    const most = Math.max(1, Math.round(Math.max(1, state.display.zoom) * dpr));
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
    const display = session.display || {};
    state.display = {
      mode: display.mode === "flicker" || display.mode === "side-by-side" ? display.mode : cfg.mode,
      hz: Number(display.flicker_hz) > 0 ? Number(display.flicker_hz) : cfg.flickerHz,
      zoom: parseInt(display.zoom, 10) > 0 ? parseInt(display.zoom, 10) : cfg.zoom,
      minDisplayMs: Number.isInteger(display.min_display_ms) ? Math.max(0, display.min_display_ms) : cfg.minDisplayMs,
    };
    state.breakEvery = Number.isInteger(session.break_every) ? session.break_every : cfg.breakEvery;
    state.trials = session.trials
      .map((t) => ({ ...t, practice: Boolean(t.practice) }))
      .sort((a, b) => a.index - b.index);
    state.practice = state.trials.filter((t) => t.practice);
    state.real = state.trials.filter((t) => !t.practice);
    root.dataset.mode = state.display.mode;
    $("trial-count").textContent = String(state.real.length);
    if ($("practice-count")) $("practice-count").textContent = String(state.practice.length);
    // A break comes after every `break_every` real trials when more follow: promise no other.
    $("break-every").textContent = String(state.breakEvery);
    $("break-note").hidden = !(state.breakEvery > 0 && state.real.length > state.breakEvery);
  }

  const realDone = () => state.real.filter((t) => t.answered).length;

  function updateProgress(trial) {
    const bar = $("progressbar");
    $("practice-badge").hidden = !trial.practice;
    let text;
    if (trial.practice) {
      const k = state.practice.indexOf(trial) + 1;
      text = `Practice ${k} of ${state.practice.length}`;
      bar.setAttribute("aria-valuemax", String(state.practice.length));
      bar.setAttribute("aria-valuenow", String(k));
      bar.firstElementChild.style.width = "0%";
    } else {
      const total = state.real.length;
      const k = state.real.indexOf(trial) + 1;
      text = `Trial ${k} of ${total}`;
      bar.setAttribute("aria-valuemax", String(total));
      bar.setAttribute("aria-valuenow", String(k));
      bar.firstElementChild.style.width = `${(100 * (k - 1)) / total}%`;
    }
    bar.setAttribute("aria-valuetext", text);
    $("progress-text").textContent = text;
  }

  // What comes after an answer (or a Continue): a screen between phases, or the next trial.
  function nextStep() {
    if (state.stopped || state.finishing) return;
    const trial = state.trials.find((t) => !t.answered);
    const last = state.lastAnswered;
    state.lastAnswered = null;
    if (!trial) {
      showDebrief();
      return;
    }
    if (last && last.practice && !trial.practice) {
      halt();
      show("practice-done");
      return;
    }
    if (last && !last.practice && !trial.practice && state.breakEvery > 0) {
      const done = realDone();
      if (done > 0 && done % state.breakEvery === 0) {
        halt();
        $("break-done").textContent = String(done);
        $("break-total").textContent = String(state.real.length);
        show("break");
        return;
      }
    }
    showTrial(trial);
  }

  function showWait(trial) {
    if (state.current !== trial) return;
    $("trial-wait").hidden = false;
    updateWaitText();
    state.timers.stuck = setTimeout(() => {
      // Online and still nothing: the images may be gone for good. Offer a reload, keep trying.
      if (state.current === trial && navigator.onLine !== false) $("wait-reload").hidden = false;
    }, STUCK_MS);
  }

  async function showTrial(trial) {
    stopFlicker();
    clearTrialTimers();
    state.current = trial;
    state.accepting = false;
    state.painted = false;
    show("trial", "loading");
    stage.style.visibility = "hidden";
    delete stage.dataset.index;
    delete stage.dataset.phase;
    delete stage.dataset.ready;
    updateProgress(trial);
    fit();
    const urls = [trial.left, trial.reference, trial.right];
    urls.forEach(preload); // this trial's images first
    preloadAfter(trial);

    state.timers.wait = setTimeout(() => showWait(trial), SLOW_IMAGES_MS);
    const [images] = await Promise.all([
      Promise.all(urls.map(slotImage)),
      sleep(Math.max(0, BLANK_MS - (performance.now() - state.answeredAt))),
    ]);
    if (state.current !== trial || state.stopped) return; // superseded
    clearTrialTimers();
    $("trial-wait").hidden = true;
    $("wait-reload").hidden = true;

    const slots = stage.querySelectorAll(".patch");
    images.forEach((img, i) => slots[i].replaceChildren(img));
    stage.dataset.index = String(trial.index);
    stage.dataset.practice = trial.practice ? "true" : "false";
    stage.style.visibility = "";
    const flicker = state.display.mode === "flicker";
    requestAnimationFrame(() => {
      // This frame draws the three images: response times and the minimum display time
      // run from it.
      if (state.current !== trial) return;
      state.shownAt = performance.now();
      state.accepting = true;
      document.body.dataset.state = "trial";
      if (flicker) startFlicker(trial, images[0], images[2]);
      requestAnimationFrame(() => {
        if (state.current !== trial) return;
        state.painted = images.every((img) => img.isConnected && img.complete && img.naturalWidth > 0);
        if (!state.painted) {
          state.timers.again = setTimeout(() => showTrial(trial), 100); // never answer half a trial
          return;
        }
        const wait = Math.max(0, state.shownAt + state.display.minDisplayMs - performance.now());
        state.timers.ready = setTimeout(() => {
          if (state.current === trial) stage.dataset.ready = "true";
        }, wait);
      });
    });
  }

  // A press before the images were shown for long enough: ignored, and the rater told why.
  function tooSoon() {
    state.ignored += 1;
    document.body.dataset.ignored = String(state.ignored);
    const note = $("too-soon");
    note.textContent = state.accepting
      ? "Too quick: please look at the images first."
      : "Please wait for the images to appear.";
    note.hidden = false;
    $("hint-normal").hidden = true;
    clearTimeout(state.tooSoonTimer);
    state.tooSoonTimer = setTimeout(() => {
      note.hidden = true;
      $("hint-normal").hidden = false;
    }, TOO_SOON_SHOWN_MS);
  }

  function answer(side) {
    const trial = state.current;
    if (state.stopped || !trial || trial.answered) return;
    const now = performance.now();
    if (!state.accepting || !state.painted || now - state.shownAt < state.display.minDisplayMs) {
      tooSoon();
      return;
    }
    state.accepting = false; // one answer per trial
    stopFlicker();
    clearTrialTimers();
    delete stage.dataset.ready;
    // A tapped or clicked button keeps the focus; drop it, so no side looks different next.
    if (document.activeElement && document.activeElement.classList.contains("choice")) {
      document.activeElement.blur();
    }
    trial.answered = true;
    state.answeredAt = now;
    state.lastAnswered = trial;
    enqueue({
      index: trial.index,
      triplet: trial.triplet,
      side,
      client_id: uuid(),
      rt_ms: now - state.shownAt,
      display_mode: state.display.mode,
    });
    nextStep();
  }

  function showDebrief() {
    halt();
    show("debrief");
  }

  // --- the vote queue, shared by this browser's tabs --------------------------------

  const queueKey = () => `twoafc:votes:${state.token}`;
  let memoryQueue = []; // when localStorage cannot be used

  function readQueue() {
    if (!storage.ok) return memoryQueue.slice();
    const saved = storage.get(queueKey());
    return Array.isArray(saved) ? saved.filter((v) => v && v.client_id) : [];
  }

  function writeQueue(list) {
    if (storage.ok) {
      if (!list.length) {
        storage.remove(queueKey());
        return;
      }
      if (storage.set(queueKey(), list)) return;
      storage.ok = false; // full or refused: from now on this tab keeps its queue in memory
    }
    memoryQueue = list.slice();
  }

  // The queue as stored now (another tab may have changed it); its trials count as answered.
  function syncQueue() {
    state.queue = readQueue();
    const queued = new Set(state.queue.map((v) => v.index));
    // Not the trial on screen: the rater can still answer it here (only one answer is kept).
    for (const t of state.trials) if (queued.has(t.index) && t !== state.current) t.answered = true;
    updatePending();
  }

  function enqueue(vote) {
    const list = readQueue();
    if (!list.some((v) => v.client_id === vote.client_id)) list.push(vote);
    writeQueue(list);
    syncQueue();
    pump();
  }

  function acknowledge(vote) {
    writeQueue(readQueue().filter((v) => v.client_id !== vote.client_id));
    syncQueue();
  }

  function backoffMs() {
    // While finishing, start retrying sooner: the rater is waiting for the code.
    const n = state.finishing ? Math.max(0, state.failures - 1) : state.failures;
    const base = Math.min(30000, 500 * 2 ** Math.min(n, 6));
    return base * (0.75 + Math.random() * 0.5);
  }

  function scheduleRetry() {
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(() => {
      state.retryTimer = null;
      pump();
    }, backoffMs());
  }

  // Try now: after coming back online, or when the rater asks.
  function kick() {
    if (state.stopped) return;
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    pump();
  }

  function failed() {
    state.failures += 1;
    updateBanner();
    if (state.finishing) {
      state.finishFailures += 1;
      if (state.finishFailures > CONFIRM_RETRIES) showUnconfirmed();
    }
    scheduleRetry();
  }

  async function pump() {
    if (state.pumping || state.retryTimer || state.stopped || !state.token) return;
    state.pumping = true;
    try {
      for (;;) {
        if (state.stopped) return;
        syncQueue();
        const vote = state.queue[0];
        if (!vote) break;
        try {
          // Sent as this tab's, whichever tab queued it. 201 recorded, 200 a replay.
          await api("POST", `/sessions/${state.token}/votes`, { ...vote, tab_id: state.tab });
          state.failures = 0;
        } catch (error) {
          if (retryable(error.status)) {
            failed();
            return;
          }
          if (error.reason === "other-tab") {
            showOtherTab(); // the vote stays queued for the tab that continues
            return;
          }
          // Refused for good (not assigned, session ended, already answered): drop it.
          console.warn(`twoafc: vote for trial ${vote.index} dropped (${error.status}): ${error.message}`);
        }
        acknowledge(vote);
        updateBanner();
      }
    } finally {
      state.pumping = false;
    }
    if (state.finishing) finishNow();
  }

  // The page is going away: send what is still queued, without waiting for an answer
  // (votes are idempotent on client_id, so a later resend is harmless), then give the
  // session back, so that it can be opened again at once.
  function leaving() {
    if (!state.token || state.stopped) return;
    for (const vote of state.queue) {
      beacon(`/sessions/${state.token}/votes`, { ...vote, tab_id: state.tab });
    }
    beacon(`/sessions/${state.token}/release`, { tab_id: state.tab });
  }

  // --- finishing -----------------------------------------------------------------

  const completionKey = () => `twoafc:done:${cfg.slug}:${state.participant}`;

  function beginFinish() {
    halt();
    state.finishing = true;
    state.finishFailures = 0;
    show("sending");
    updatePending();
    kick();
  }

  async function finishNow() {
    if (state.confirmed || state.finishInFlight || state.queue.length || state.stopped) return;
    state.finishInFlight = true;
    let data;
    try {
      ({ data } = await api("POST", `/sessions/${state.token}/finish`));
    } catch (error) {
      state.finishInFlight = false;
      if (retryable(error.status)) {
        failed();
        return;
      }
      if (error.reason === "other-tab") {
        showOtherTab();
        return;
      }
      if (error.status === 409 && (await resumeUnanswered())) return;
      showError(error.message, false);
      return;
    }
    state.finishInFlight = false;
    state.failures = 0;
    updateBanner();
    confirmed(data || {});
  }

  // Could not confirm yet: show the code if an earlier finish gave it, else say so; keep trying.
  function showUnconfirmed() {
    if (state.confirmed || state.unconfirmedShown || state.stopped) return;
    state.unconfirmedShown = true;
    const saved = storage.get(completionKey());
    const code = saved && saved.token === state.token ? saved.completion_code : "";
    const notice = $("confirm-notice");
    if (code) {
      $("completion-code").textContent = code;
      $("code-intro").textContent = "Your completion code is:";
      notice.textContent = "We could not confirm your last answers yet — keep this page open; we keep trying.";
    } else {
      notice.textContent = "We could not confirm your answers yet — keep this page open; we keep trying.";
    }
    $("done-title").textContent = "Almost done";
    $("code-block").hidden = !code;
    notice.hidden = false;
    $("retry-now").hidden = false;
    show("done", "unconfirmed");
  }

  function marketName() {
    if (cfg.market.PROLIFIC_PID) return "prolific";
    if (cfg.market.workerId || cfg.market.assignmentId) return "mturk";
    return "plain";
  }

  function confirmed(data) {
    state.confirmed = true;
    clearTimeout(state.retryTimer);
    storage.remove(queueKey());
    const screenedOut = Boolean(data.screened_out);
    storage.set(completionKey(), {
      token: state.token,
      completion_code: data.completion_code,
      redirect_url: safeUrl(data.redirect_url) ? data.redirect_url : null,
      screened_out: screenedOut,
    });
    $("code-block").hidden = false;
    $("confirm-notice").hidden = true;
    $("retry-now").hidden = true;
    $("completion-code").textContent = data.completion_code || "";
    if (screenedOut) {
      // Not "all your answers were received": say plainly what happened and what to do.
      $("done-title").textContent = "Thank you for your time";
      $("screened-out").hidden = false;
      const market = safeUrl(data.redirect_url) ? "prolific" : data.mturk ? "mturk" : marketName();
      for (const name of ["prolific", "mturk", "plain"]) $(`screened-${name}`).hidden = name !== market;
      $("code-intro").textContent = "Your screened-out code is:";
      $("code-hint").hidden = market !== "plain";
    } else {
      $("done-title").textContent = "Thank you!";
      $("screened-out").hidden = true;
      $("code-intro").textContent = "All your answers were received. Your completion code is:";
    }
    show("done", screenedOut ? "screened-out" : "done");

    if (safeUrl(data.redirect_url)) {
      $("code-hint").hidden = true;
      $("redirect-link").href = data.redirect_url;
      $("redirect-notice").hidden = false;
      setTimeout(() => location.assign(data.redirect_url), screenedOut ? SCREENED_OUT_REDIRECT_MS : REDIRECT_MS);
    } else if (data.mturk && safeUrl(data.mturk.submit_url)) {
      const form = $("mturk-form");
      form.action = data.mturk.submit_url;
      $("mturk-assignment").value = data.mturk.assignment_id || cfg.market.assignmentId || "";
      $("mturk-code").value = data.completion_code || "";
      $("code-hint").hidden = true;
      form.hidden = false;
      setTimeout(() => form.submit(), screenedOut ? SCREENED_OUT_REDIRECT_MS : REDIRECT_MS);
    }
  }

  // The server is missing votes (one was refused): show those trials again.
  async function resumeUnanswered() {
    try {
      const { data } = await sessionCall("/resume");
      if (!data || data.finished || data.trials.every((t) => t.answered)) return false;
      adopt(data);
      syncQueue();
      state.finishing = false;
      state.unconfirmedShown = false;
      nextStep();
      return true;
    } catch {
      return false;
    }
  }

  // --- sessions: resume, start (after consent), take over, decline ---------------------

  function sessionCall(path, extra = {}) {
    const screenSize = window.screen || {};
    return api("POST", `/studies/${encodeURIComponent(cfg.slug)}/sessions${path}`, {
      participant_id: state.participant || null,
      market: cfg.market,
      tab_id: state.tab,
      screen_w: Math.round(screenSize.width || 0),
      screen_h: Math.round(screenSize.height || 0),
      dpr: window.devicePixelRatio || 1,
      ...extra,
    });
  }

  // A session to go on with: just started ("start"), found again ("resume"), or taken
  // over from another tab ("takeover").
  function enter(session, how) {
    // This tab holds the session now: any other tab of this browser on it stops at once
    // (one on another device learns at its next vote).
    if (channel) {
      channel.postMessage({ type: "taken", slug: cfg.slug, participant: state.participant, tab: state.tab });
    }
    state.stopped = false;
    state.finishing = false;
    state.finishInFlight = false;
    state.unconfirmedShown = false;
    state.confirmed = false;
    state.failures = 0;
    adopt(session);
    syncQueue();
    pump();
    if (session.finished) {
      beginFinish();
      return;
    }
    if (state.trials.every((t) => t.answered)) {
      showDebrief();
      return;
    }
    preloadAfter(null);
    const answered = state.trials.some((t) => t.answered);
    if (how === "start" || !answered) {
      show("instructions");
      return;
    }
    $("resume-done").textContent = String(realDone());
    $("resume-total").textContent = String(state.real.length);
    show("resume");
  }

  async function agree() {
    if (state.starting) return;
    state.starting = true;
    $("consent-agree").disabled = true;
    $("consent-status").textContent = "Starting…";
    state.participant = participantId(true);
    try {
      const { data } = await sessionCall("", { consent: true });
      enter(data, "start");
    } catch (error) {
      startFailed(error);
    } finally {
      state.starting = false;
      $("consent-agree").disabled = false;
      $("consent-status").textContent = "";
    }
  }

  function decline() {
    show("declined");
    // One count per browser: declining again after a reload is not a second person.
    const key = `twoafc:declined:${cfg.slug}`;
    if (storage.get(key)) return;
    storage.set(key, true);
    api("POST", `/studies/${encodeURIComponent(cfg.slug)}/declines`).catch(() => {});
  }

  async function continueHere() {
    if (state.starting) return;
    state.starting = true;
    $("continue-here").disabled = true;
    $("other-tab-status").textContent = "Taking over…";
    try {
      const { data } = await sessionCall("/takeover");
      enter(data, "takeover");
    } catch (error) {
      if (error.reason === "no-session") show("consent"); // nothing to continue: start afresh
      else if (retryable(error.status)) $("other-tab-status").textContent = error.message;
      else startFailed(error);
    } finally {
      state.starting = false;
      $("continue-here").disabled = false;
    }
  }

  // Back from the browser's back-forward cache: the session was given back on pagehide,
  // so hold it again, unless another tab has it now.
  async function reclaim() {
    if (!state.token || state.stopped || state.confirmed) return;
    try {
      await sessionCall("/resume");
    } catch (error) {
      if (error.reason === "other-tab") showOtherTab();
    }
  }

  function showCompleted() {
    halt();
    const saved = storage.get(completionKey());
    if (saved && saved.completion_code) {
      $("completed-code-value").textContent = saved.completion_code;
      $("completed-code").hidden = false;
      if (saved.screened_out) {
        $("completed-screened-out").hidden = false;
        $("completed-code-intro").textContent = "Your screened-out code is:";
      }
      if (safeUrl(saved.redirect_url)) {
        $("completed-link").href = saved.redirect_url;
        $("completed-return").hidden = false;
      }
    }
    show("completed");
  }

  function startFailed(error) {
    if (error.reason === "other-tab") showOtherTab();
    else if (error.reason === "completed") showCompleted();
    else if (error.status === 410 || error.reason === "full") {
      $("error-title").textContent = "Thank you";
      showError("This study has all the responses it needs. Thank you!", false, "full");
    } else showError(error.message, retryable(error.status));
  }

  // Enter on a screen between trials continues, wherever the focus is.
  const CONTINUE = {
    instructions: "start", resume: "resume-continue", "practice-done": "practice-continue",
    break: "break-continue", debrief: "submit", consent: "consent-agree",
  };

  function listen() {
    document.addEventListener("keydown", (event) => {
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      if (event.key === "Enter" && event.repeat) {
        event.preventDefault(); // a held Enter must not click through several screens
        return;
      }
      const screen = document.body.dataset.state;
      if (event.key === "Enter" && CONTINUE[screen] && screen !== "consent") {
        const target = document.activeElement;
        if (target && (target.tagName === "BUTTON" || target.tagName === "A")) return; // it clicks itself
        event.preventDefault();
        $(CONTINUE[screen]).click();
        return;
      }
      const side = KEYS[event.code] || KEYS[event.key];
      if (!side || $("screen-trial").hidden) return;
      event.preventDefault(); // no scrolling on arrows
      if (event.repeat) return;
      answer(side);
    });
    for (const button of stage.querySelectorAll(".choice")) {
      button.addEventListener("click", () => answer(button.dataset.side));
    }
    const onState = (id, wanted, action) => $(id).addEventListener("click", () => {
      if (document.body.dataset.state === wanted) action();
    });
    onState("consent-agree", "consent", agree);
    onState("consent-decline", "consent", decline);
    onState("start", "instructions", nextStep);
    onState("resume-continue", "resume", nextStep);
    onState("practice-continue", "practice-done", nextStep);
    onState("break-continue", "break", nextStep);
    onState("submit", "debrief", beginFinish);
    onState("continue-here", "other-tab", continueHere);
    $("retry-now").addEventListener("click", kick);
    $("reload").addEventListener("click", () => location.reload());
    $("wait-reload").addEventListener("click", () => location.reload());
    window.addEventListener("resize", fit);
    window.addEventListener("online", () => {
      updateBanner();
      networkBack();
      kick();
    });
    window.addEventListener("offline", updateBanner);
    // Another tab changed the shared queue (it answered, or sent a vote): keep up.
    window.addEventListener("storage", (event) => {
      if (state.token && event.key === queueKey() && !state.stopped) {
        syncQueue();
        kick();
      }
    });
    window.addEventListener("pagehide", leaving);
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) reclaim();
    });
    window.addEventListener("beforeunload", (event) => {
      // Unsent answers, or a completion not yet confirmed: ask before leaving.
      if (state.stopped || state.confirmed) return;
      if (state.queue.length || state.finishing) {
        event.preventDefault();
        event.returnValue = "";
      }
    });
  }

  function showPreview() {
    $("preview-notice").hidden = false;
    $("start").hidden = true;
    show("instructions", "preview");
  }

  async function boot() {
    listen();
    updateBanner();
    if (cfg.preview) {
      showPreview(); // MTurk preview: no session until the HIT is accepted
      return;
    }
    state.participant = participantId(false);
    state.tab = await tabId();
    // Only a question before consent: does this participant have a session already?
    let reply;
    try {
      reply = await sessionCall("/resume");
    } catch (error) {
      startFailed(error);
      return;
    }
    if (reply.data) enter(reply.data, "resume");
    else show("consent");
  }

  boot();
})();
