// Grade by question: one answer at a time, keyboard first. The server's JSON state is the truth: every
// action is one POST whose answer is the question's new state (so other TAs' decisions show up too).
(function () {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf"]').content;
  let state = JSON.parse(document.getElementById("state").textContent);
  const qid = state.question.id;
  const $ = (id) => document.getElementById(id);
  const cards = {};
  document.querySelectorAll("#answers .answer").forEach((el) => { cards[el.dataset.student] = el; });
  let current = decodeURIComponent(location.hash.slice(1));
  if (!(current in state.students)) current = state.order[0];
  let busy = 0;

  const fmt = (x) => (x === null || x === undefined ? "–" : String(Math.round(x * 100) / 100));
  const signed = (x) => (x > 0 ? "+" : "") + fmt(x);

  function order() {
    if (!$("by-group").checked) return state.order;
    return state.groups.flatMap((g) => g.members);
  }

  // Decisions are sent one at a time, in the order they were made; a body given as a function is computed
  // when its turn comes, from the state the previous decision returned (so "1" twice is apply, then remove).
  let queue = Promise.resolve(null);
  function post(path, body) {
    busy++;
    const run = async () => {
      $("error").textContent = ""; $("notice").textContent = "";
      try {
        const payload = typeof body === "function" ? body() : body;
        if (payload === null) return null;
        const r = await fetch(path, {method: "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(payload)});
        const data = await r.json().catch(() => ({error: "the server answered " + r.status}));
        if (!r.ok) { $("error").textContent = data.error || ("error " + r.status); return null; }
        state = data; render(); return data;
      } catch (e) {
        $("error").textContent = "Not saved: the server cannot be reached (" + e.message + ").";
        return null;
      } finally { busy--; }
    };
    queue = queue.then(run, run);
    return queue;
  }
  const grade = (body, student = current) =>
    post(`/api/q/${encodeURIComponent(qid)}/grade/${encodeURIComponent(student)}`, body);

  function renderMath(el) {
    if (el.dataset.math || !window.katex) return;
    el.querySelectorAll(".tex").forEach((s) => {
      // students' TeX is often not strict LaTeX: draw it anyway, without console noise
      try { katex.render(s.textContent, s, {displayMode: s.dataset.display === "1", throwOnError: false, strict: "ignore"}); }
      catch (e) { /* leave the TeX source */ }
    });
    el.dataset.math = "1";
  }

  let listKey = "";
  function renderList() {
    // built once per order; later renders only update classes and scores (no element is replaced under the mouse)
    const ol = $("answer-list"), names = order(), key = names.join("\n");
    if (key !== listKey) {
      ol.textContent = "";
      for (const s of names) {
        const li = document.createElement("li");
        li.dataset.student = s;
        const name = document.createElement("span"); name.className = "name"; name.textContent = s;
        const meta = document.createElement("span"); meta.className = "meta";
        const sc = document.createElement("span"); sc.className = "sc";
        li.append(name, meta, sc);
        li.addEventListener("click", () => go(s));
        ol.append(li);
      }
      listKey = key;
    }
    for (const li of ol.children) {
      const s = li.dataset.student, st = state.students[s];
      li.className = (s === current ? "current " : "") + (st.score === null ? "ungraded" : "graded");
      li.children[1].textContent = `G${st.group}` + (st.duplicates ? " ≡" : "") + (st.empty ? " ∅" : "");
      li.children[1].title = st.duplicates ? "identical to " + st.duplicates.join(", ") : `group ${st.group}`;
      li.children[2].textContent = fmt(st.score);
    }
  }

  let itemsKey = "";
  function renderItems() {
    const st = state.students[current];
    const ol = $("items"), key = JSON.stringify(state.items.map((it) => [it.id, it.points, it.comment]));
    if (key === itemsKey) {  // same items: only which are applied, and counts, change (an open edit form stays)
      for (const li of ol.querySelectorAll("li[data-item]")) {
        const it = state.items.find((x) => x.id === Number(li.dataset.item));
        li.classList.toggle("applied", st.items.includes(it.id));
        const uses = li.querySelector(".uses");
        if (uses) { uses.textContent = `×${it.uses}`; uses.title = `applied to ${it.uses} answer(s)`; }
      }
      return;
    }
    itemsKey = key;
    ol.textContent = "";
    state.items.forEach((it, i) => {
      const li = document.createElement("li");
      li.dataset.item = it.id;
      li.className = st.items.includes(it.id) ? "applied" : "";
      const key = document.createElement("kbd"); key.textContent = i < 9 ? String(i + 1) : "";
      const pts = document.createElement("span"); pts.className = "pts"; pts.textContent = signed(it.points);
      const txt = document.createElement("span"); txt.className = "txt"; txt.textContent = it.comment;
      const uses = document.createElement("span"); uses.className = "uses muted"; uses.textContent = `×${it.uses}`;
      uses.title = `applied to ${it.uses} answer(s)`;
      const edit = document.createElement("button"); edit.className = "link edit"; edit.textContent = "edit";
      edit.addEventListener("click", (e) => { e.stopPropagation(); editItem(li, it); });
      li.append(key, pts, txt, uses, edit);
      li.addEventListener("click", (e) => {  // not while its edit form is open (Enter there "clicks" Save)
        if (!li.classList.contains("editing") && !e.target.closest("form")) toggle(it.id);
      });
      ol.append(li);
    });
    if (!state.items.length) {
      const li = document.createElement("li"); li.className = "muted empty";
      li.textContent = "No items yet: add one below (i), e.g. “1 · Correct formula”.";
      ol.append(li);
    }
  }

  function editItem(li, it) {
    li.textContent = "";
    li.className = "editing";
    const form = document.createElement("form");
    form.className = "edit-item";
    const p = document.createElement("input"); p.value = fmt(it.points); p.size = 4; p.name = "points";
    const c = document.createElement("input"); c.value = it.comment; c.name = "comment";
    const ok = document.createElement("button"); ok.type = "submit"; ok.textContent = "Save";
    form.append(p, c, ok);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      itemsKey = "";
      post(`/api/q/${encodeURIComponent(qid)}/items/${it.id}`, {points: p.value, comment: c.value});
    });
    form.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.stopPropagation(); itemsKey = ""; render(); } });
    li.append(form);
    p.focus(); p.select();
  }

  function renderCurrent() {
    const st = state.students[current];
    for (const [s, el] of Object.entries(cards)) el.hidden = s !== current;
    if (cards[current]) renderMath(cards[current]);
    $("current-student").textContent = current;
    $("current-report").href = `/s/${encodeURIComponent(current)}`;
    $("current-score").textContent = `${fmt(st.score)} / ${fmt(state.question.max)}`;
    $("current-score").className = "score " + (st.score === null ? "ungraded" : "graded");
    $("current-by").textContent = st.by ? `graded by ${st.by}, ${st.at.replace("T", " ").slice(0, 16)} UTC` : "";
    const box = $("group-box");
    box.textContent = "";
    const grp = state.groups.find((g) => g.id === st.group);
    if (grp && grp.members.length > 1) {
      const others = grp.members.filter((m) => m !== current);
      const span = document.createElement("span");
      span.textContent = `Group ${grp.id}${grp.empty ? " (no answer)" : ""} · ${grp.members.length} near-identical answers: `;
      box.append(span);
      others.forEach((m) => {
        const a = document.createElement("a"); a.href = "#" + m; a.textContent = m;
        const sc = state.students[m].score;
        a.className = sc === null ? "ungraded" : "graded"; a.title = "score " + fmt(sc);
        a.addEventListener("click", (e) => { e.preventDefault(); go(m); });
        box.append(a, document.createTextNode(" "));
      });
      if (st.duplicates) {
        const d = document.createElement("span"); d.className = "dup";
        d.textContent = `identical to ${st.duplicates.join(", ")}`;
        box.append(d);
      }
      const b = document.createElement("button");
      b.id = "apply-group";
      b.textContent = `Give this grade to ${others.length === 1 ? others[0] : `the ${others.length} others`}… (g)`;
      b.disabled = st.score === null && !st.items.length;
      b.addEventListener("click", applyToGroup);
      box.append(b);
    } else if (grp) {
      const span = document.createElement("span"); span.className = "muted";
      span.textContent = "Alone in its group: no other answer is near-identical.";
      box.append(span);
    }
    const c = $("comment"), o = $("override");
    if (document.activeElement !== c) c.value = st.comment || "";
    if (document.activeElement !== o) o.value = st.override === null ? "" : fmt(st.override);
  }

  function render() {
    if (!(current in state.students)) current = state.order[0];
    $("progress").textContent = `${state.graded} / ${state.total}`;
    $("progress-bar").value = state.graded; $("progress-bar").max = state.total;
    renderList(); renderItems(); renderCurrent();
  }

  function go(student) {
    if (!(student in state.students)) return;
    saveBoxes();
    notice("");
    current = student;
    history.replaceState(null, "", "#" + encodeURIComponent(student));
    render();
    const li = document.querySelector(`#answer-list li.current`);
    if (li) li.scrollIntoView({block: "nearest"});
  }
  function step(d) {
    const o = order(); const i = o.indexOf(current);
    go(o[Math.min(Math.max(i + d, 0), o.length - 1)]);
  }
  function nextUngraded() {
    const o = order(); const i = o.indexOf(current);
    for (let k = 1; k <= o.length; k++) {
      const s = o[(i + k) % o.length];
      if (state.students[s].score === null) return go(s);
    }
  }
  function toggle(itemId) {
    const student = current;
    return grade(() => ({op: "item", item: itemId, applied: !state.students[student].items.includes(itemId)}), student);
  }
  // `g`: give the answer's grade to the rest of its group, after showing every member (a group is only a
  // guess that one grade fits all: the TA confirms it, seeing each answer)
  function notice(text) { $("notice").textContent = text; }
  function applyToGroup() {
    const st = state.students[current];
    const grp = state.groups.find((g) => g.id === st.group);
    const targets = grp ? grp.members.filter((m) => m !== current) : [];
    if (!targets.length) {
      notice(`${current}'s answer is alone in its group (no other answer is near-identical): nothing to give. `
        + "Grade the other answers one by one.");
      return;
    }
    if (st.score === null && !st.items.length) {
      notice(`Grade ${current}'s answer first, then press g to give that grade to its group.`);
      return;
    }
    const dialog = $("group-dialog"), list = $("group-members");
    const applied = state.items.filter((it) => st.items.includes(it.id)).map((it) => `${it.comment} (${signed(it.points)})`);
    $("group-what").textContent = `${current}'s grade: ${fmt(st.score)} / ${fmt(state.question.max)}`
      + (applied.length ? ` · ${applied.join(" · ")}` : "") + (st.override !== null ? " · score set by hand" : "")
      + (st.comment ? ` · comment “${st.comment}”` : "");
    list.textContent = "";
    for (const m of targets) {
      const li = document.createElement("li");
      const head = document.createElement("div"); head.className = "member-head";
      const name = document.createElement("b"); name.textContent = m;
      const now = document.createElement("span"); now.className = "muted";
      const ms = state.students[m];
      now.textContent = ms.score === null ? " · not graded yet" : ` · now ${fmt(ms.score)}${ms.by ? ", graded by " + ms.by : ""}: will be replaced`;
      head.append(name, now);
      const body = document.createElement("div"); body.className = "answer";
      if (cards[m]) { renderMath(cards[m]); body.append(...Array.from(cards[m].childNodes, (n) => n.cloneNode(true))); }
      li.append(head, body);
      list.append(li);
    }
    $("group-confirm").textContent = `Give it to ${targets.length === 1 ? targets[0] : `these ${targets.length} answers`}`;
    dialog.dataset.source = current;
    dialog.dataset.targets = JSON.stringify(targets);
    dialog.returnValue = "";  // Esc keeps the last value: start from none
    dialog.showModal();
    $("group-confirm").focus();
  }
  $("group-dialog").addEventListener("close", () => {
    const dialog = $("group-dialog");
    if (dialog.returnValue !== "confirm") return;
    dialog.returnValue = "";
    const source = dialog.dataset.source, targets = JSON.parse(dialog.dataset.targets);
    post(`/api/q/${encodeURIComponent(qid)}/copy/${encodeURIComponent(source)}`, {targets})
      .then((data) => { if (data) notice(`${source}'s grade given to ${targets.join(", ")}.`); });
  });
  function saveBoxes() {
    const st = state.students[current];
    const c = $("comment"), o = $("override");
    const student = current;
    if (c.value.trim() !== (st.comment || "").trim())
      post(`/api/q/${encodeURIComponent(qid)}/grade/${encodeURIComponent(student)}`, {op: "comment", comment: c.value});
    const ov = st.override === null ? "" : fmt(st.override);
    if (o.value.trim() !== ov)
      post(`/api/q/${encodeURIComponent(qid)}/grade/${encodeURIComponent(student)}`, {op: "override", score: o.value});
  }

  $("comment").addEventListener("change", saveBoxes);
  $("override").addEventListener("change", saveBoxes);
  $("by-group").addEventListener("change", render);
  $("new-item").addEventListener("submit", async (e) => {
    e.preventDefault();
    document.activeElement.blur();  // keys go back to grading at once, while the item is being saved
    const student = current;
    const data = await post(`/api/q/${encodeURIComponent(qid)}/items`,
      {points: $("new-points").value, comment: $("new-comment").value});
    if (data) {
      $("new-points").value = ""; $("new-comment").value = "";
      await grade({op: "item", item: data.created, applied: true}, student);  // a new item is for the answer in view
    }
  });

  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if ($("group-dialog").open) return;  // the dialog's own keys: Enter confirms, Esc cancels
    if (t.matches("input, textarea, select")) {
      if (e.key === "Escape") { t.blur(); }
      else if (e.key === "Enter" && t.id === "override") { t.blur(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k === "j" || k === "ArrowDown") step(1);
    else if (k === "k" || k === "ArrowUp") step(-1);
    else if (k === "n") nextUngraded();
    else if (/^[1-9]$/.test(k)) { const it = state.items[Number(k) - 1]; if (it) toggle(it.id); }
    else if (k === "c") $("comment").focus();
    else if (k === "s") $("override").focus();
    else if (k === "i") $("new-points").focus();
    else if (k === "g") applyToGroup();
    else return;
    e.preventDefault();
  });

  // other TAs' decisions: refresh while idle
  setInterval(async () => {
    if (busy || document.hidden || document.activeElement.matches("input, textarea")) return;
    try {
      const r = await fetch(`/api/q/${encodeURIComponent(qid)}`, {credentials: "same-origin"});
      if (r.ok && !busy) { state = await r.json(); render(); }
    } catch (e) { /* offline for a moment */ }
  }, 5000);

  render();
})();
