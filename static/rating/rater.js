/* The twoafc rater page.
 *
 * consent → instructions (with an example) → practice → "practice done" → trials, with a
 * break every `break_every` real trials → debrief → sending → completion code (→ Prolific
 * redirect or MTurk submit). A rater coming back after answering real trials gets a
 * "welcome back" screen instead of consent and instructions.
 *
 * Everything comes from the JSON API (rating/api.py). Votes are queued in localStorage and
 * sent one by one until the server acknowledges them, so a flaky connection or a reload
 * loses nothing; the page never waits for the network between trials. The completion
 * code, the Prolific redirect and the MTurk submit only happen once the server has
 * acknowledged every vote and answered `finish` with 200.
 *
 * Display modes: side by side, or flicker (AIC-3 style): A and B each alternate, in
 * phase, between their own image and the reference, `flicker_hz` switches per second;
 * the centre shows the reference still.
 *
 * Test hooks: body[data-state] is loading | consent | declined | instructions | preview |
 * resume | trial | practice-done | break | debrief | sending | unconfirmed | done |
 * other-tab | completed | full | error; the shown trial is #trial[data-index] (and
 * data-practice); body[data-pending] is the number of votes not yet acknowledged.
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

  const cfg = {
    slug: root.dataset.slug,
    api: (root.dataset.apiBase || "/api").replace(/\/+$/, ""),
    participant: root.dataset.participantId || "",
    patchSize: parseInt(root.dataset.patchSize, 10) || 64,
    zoom: parseInt(root.dataset.zoom, 10) || 4,
    mode: root.dataset.displayMode === "flicker" ? "flicker" : "side-by-side",
    flickerHz: parseFloat(root.dataset.flickerHz) || 8,
    breakEvery: parseInt(root.dataset.breakEvery, 10) || 0,
    preview: root.dataset.preview === "1" || query.get("assignmentId") === MTURK_PREVIEW,
    market: marketParams(),
  };

  const PRELOAD_AHEAD = 3;   // trials whose images load in the background
  const LOAD_TRIES = 4;      // attempts per image before giving up
  const BLANK_MS = 250;      // grey between trials: at least this long after an answer
  const REQUEST_TIMEOUT_MS = 20000;
  const CONFIRM_RETRIES = 3; // failed retries while finishing before the code (or a notice) shows
  const REDIRECT_MS = 1500;  // the code stays on screen this long before Prolific / MTurk
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
    display: { mode: cfg.mode, hz: cfg.flickerHz, zoom: cfg.zoom },
    breakEvery: cfg.breakEvery,
    trials: [],
    practice: [],      // the practice trials, in order
    real: [],          // the others, in order: progress counts these
    current: null,     // the trial on screen (or being prepared)
    lastAnswered: null, // the trial answered just before: decides practice-done and breaks
    shownAt: 0,        // performance.now() of the frame that first painted it
    accepting: false,  // true from that frame until the answer
    answeredAt: 0,
    flicker: null,     // { raf, hold } while a flicker trial is on screen
    queue: [],         // votes not yet acknowledged, oldest first
    failures: 0,       // consecutive failed sends, for the backoff
    pumping: false,
    retryTimer: null,
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
        if (event.data && event.data.type === "whose" && event.data.tab === id) {
          channel.postMessage({ type: "mine", tab: id });
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
    try { data = await response.json(); } catch { /* empty or not JSON */ }
    if (!response.ok) {
      const reason = data && typeof data.reason === "string" ? data.reason : "";
      throw new ApiError(response.status, detailOf(data, response.status), reason);
    }
    return { status: response.status, data };
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

  function halt() {
    state.accepting = false;
    state.current = null;
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
    show("other-tab");
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
    // The same image can come back in a later trial while this element is still on screen.
    return img.isConnected ? loadImage(url) : img;
  }

  // --- flicker: both sides alternate with the reference, in phase ---------------------

  function startFlicker(trial, leftImg, rightImg, hold) {
    stopFlicker();
    const halfPeriod = 1000 / Math.max(0.1, state.display.hz); // one image change per half period
    // The src swaps only ever name images that are decoded and held by `hold`, so the
    // browser shows them synchronously, without a reload or a blank frame.
    const sources = [[trial.left, trial.right], [trial.reference, trial.reference]];
    let phase = 0;
    const flicker = { raf: 0, hold };
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

  async function showTrial(trial) {
    stopFlicker();
    state.current = trial;
    state.accepting = false;
    show("trial", "loading");
    stage.style.visibility = "hidden";
    delete stage.dataset.index;
    delete stage.dataset.phase;
    fit();
    preloadAfter(trial);

    const flicker = state.display.mode === "flicker";
    const waitTimer = setTimeout(() => { $("trial-wait").hidden = false; }, 500);
    let images;
    let hold = [];
    try {
      [images] = await Promise.all([
        Promise.all([trial.left, trial.reference, trial.right].map(imageFor)),
        sleep(Math.max(0, BLANK_MS - (performance.now() - state.answeredAt))),
      ]);
      // Flicker: keep a decoded copy of each image the sides switch between.
      if (flicker) hold = await Promise.all([trial.left, trial.right, trial.reference].map(loadImage));
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
    stage.dataset.practice = trial.practice ? "true" : "false";
    stage.style.visibility = "";
    requestAnimationFrame(() => {
      if (state.current !== trial) return;
      state.shownAt = performance.now();
      state.accepting = true;
      document.body.dataset.state = "trial";
      if (flicker) startFlicker(trial, images[0], images[2], hold);
    });
  }

  function answer(side) {
    const trial = state.current;
    if (!state.accepting || !trial || trial.answered || state.stopped) return;
    state.accepting = false; // one answer per trial
    const now = performance.now();
    stopFlicker();
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
      tab_id: state.tab,
    });
    nextStep();
  }

  function showDebrief() {
    halt();
    show("debrief");
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
    for (const vote of state.queue) vote.tab_id = state.tab; // this tab sends them now
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
    if (state.pumping || state.retryTimer || state.stopped) return;
    state.pumping = true;
    try {
      while (state.queue.length) {
        const vote = state.queue[0];
        try {
          await api("POST", `/sessions/${state.token}/votes`, vote); // 201 recorded, 200 replay
          state.failures = 0;
        } catch (error) {
          if (retryable(error.status)) {
            failed();
            return;
          }
          if (error.reason === "other-tab") {
            showOtherTab(); // this tab stops; the other one shows the trial again if needed
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

  // Whatever is still queued when the page goes away: try once more, without waiting
  // for an answer. Votes are idempotent on client_id, so a later resend is harmless.
  function flushOnExit() {
    if (!state.token || !state.queue.length || state.stopped || !navigator.sendBeacon) return;
    for (const vote of state.queue) {
      try {
        const blob = new Blob([JSON.stringify(vote)], { type: "application/json" });
        navigator.sendBeacon(`${cfg.api}/sessions/${state.token}/votes`, blob);
      } catch { /* best effort */ }
    }
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

  function confirmed(data) {
    state.confirmed = true;
    clearTimeout(state.retryTimer);
    storage.remove(queueKey());
    storage.set(completionKey(), {
      token: state.token,
      completion_code: data.completion_code,
      redirect_url: safeUrl(data.redirect_url) ? data.redirect_url : null,
    });
    $("done-title").textContent = "Thank you!";
    $("code-intro").textContent = "All your answers were received. Your completion code is:";
    $("completion-code").textContent = data.completion_code || "";
    $("code-block").hidden = false;
    $("confirm-notice").hidden = true;
    $("retry-now").hidden = true;
    show("done");

    if (safeUrl(data.redirect_url)) {
      $("code-hint").hidden = true;
      $("redirect-link").href = data.redirect_url;
      $("redirect-notice").hidden = false;
      setTimeout(() => location.assign(data.redirect_url), REDIRECT_MS);
    } else if (data.mturk && safeUrl(data.mturk.submit_url)) {
      const form = $("mturk-form");
      form.action = data.mturk.submit_url;
      $("mturk-assignment").value = data.mturk.assignment_id || cfg.market.assignmentId || "";
      $("mturk-code").value = data.completion_code || "";
      $("code-hint").hidden = true;
      form.hidden = false;
      setTimeout(() => form.submit(), REDIRECT_MS);
    }
  }

  // The server is missing votes (one was refused): show those trials again.
  async function resumeUnanswered() {
    try {
      const { data } = await startSession();
      if (data.finished || data.trials.every((t) => t.answered)) return false;
      adopt(data);
      state.finishing = false;
      state.unconfirmedShown = false;
      nextStep();
      return true;
    } catch {
      return false;
    }
  }

  // --- start -----------------------------------------------------------------------

  function startSession() {
    const screenSize = window.screen || {};
    return api("POST", `/studies/${encodeURIComponent(cfg.slug)}/sessions`, {
      participant_id: state.participant,
      market: cfg.market,
      tab_id: state.tab,
      screen_w: Math.round(screenSize.width || 0),
      screen_h: Math.round(screenSize.height || 0),
      dpr: window.devicePixelRatio || 1,
    });
  }

  function showCompleted() {
    halt();
    const saved = storage.get(completionKey());
    if (saved && saved.completion_code) {
      $("completed-code-value").textContent = saved.completion_code;
      $("completed-code").hidden = false;
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
    onState("consent-agree", "consent", () => show("instructions"));
    onState("consent-decline", "consent", () => show("declined"));
    onState("start", "instructions", nextStep);
    onState("resume-continue", "resume", nextStep);
    onState("practice-continue", "practice-done", nextStep);
    onState("break-continue", "break", nextStep);
    onState("submit", "debrief", beginFinish);
    $("retry-now").addEventListener("click", kick);
    $("reload").addEventListener("click", () => location.reload());
    window.addEventListener("resize", fit);
    window.addEventListener("online", () => {
      updateBanner();
      kick();
    });
    window.addEventListener("offline", updateBanner);
    window.addEventListener("pagehide", flushOnExit);
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
    state.participant = participantId();
    state.tab = await tabId();
    let session;
    try {
      ({ data: session } = await startSession());
    } catch (error) {
      startFailed(error);
      return;
    }
    adopt(session);
    loadQueue();
    if (state.queue.length) pump();
    if (session.finished) {
      beginFinish();
      return;
    }
    if (state.trials.every((t) => t.answered)) {
      showDebrief();
      return;
    }
    preloadAfter(null);
    const done = realDone();
    if (done > 0) {
      $("resume-done").textContent = String(done);
      $("resume-total").textContent = String(state.real.length);
      show("resume");
      return;
    }
    show("consent");
  }

  boot();
})();
