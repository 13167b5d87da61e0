// The playground page: a stand-in Slack channel for the real bot, plus the simulators' panel.
//
// The page holds no truth of its own. The server pushes the whole state (server-sent
// events) whenever it changes; the page renders what the chosen person would see, and tells
// the server what that person does. The server turns it into Slack's signed requests.
"use strict";

(function () {
  const { el, renderMessageBody, renderBlocks, plain, textObject } = window.BlockKit;
  const $ = (id) => document.getElementById(id);

  const page = {
    state: null,
    user: null,
    channel: null,
    rendered: new Map(), // message key -> {json, node}
    seen: new Map(), // `${user}:${channel}` -> newest ts seen
    announcedKeys: null, // message keys already shown for this user+channel
    modalKey: null, // `${view id}:${hash}` of the modal on screen
    home: false, // the Home tab is on screen (instead of a conversation)
    homeKey: null, // `${user}:${hash}` of the Home on screen
    lastStateJson: "",
  };

  // -- talking to the server ------------------------------------------------------------------

  async function post(path, body, method) {
    let response;
    try {
      response = await fetch(path, {
        method: method || "POST",
        headers: { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      showAlert("The playground server does not answer. Is `stopbot dev` still running?");
      return false;
    }
    if (!response.ok) {
      let message = `The playground answered HTTP ${response.status}.`;
      try {
        const data = await response.json();
        if (data.error) message = data.error;
      } catch (error) { /* keep the generic message */ }
      showAlert(message);
      return false;
    }
    hideAlert();
    return true;
  }

  function showAlert(message) {
    $("alert").textContent = message;
    $("alert-box").hidden = false;
  }

  function hideAlert() {
    $("alert-box").hidden = true;
    $("alert").textContent = "";
  }

  function announce(text) {
    const region = $("announcer");
    region.textContent = "";
    // A fresh text node after a tick is what screen readers reliably pick up.
    window.setTimeout(() => { region.textContent = text; }, 50);
  }

  function connect() {
    const source = new EventSource("/playground/events");
    source.addEventListener("open", () => setConnection("live", "Live"));
    source.addEventListener("error", () => setConnection("down", "Reconnecting…"));
    source.addEventListener("state", (event) => {
      if (event.data === page.lastStateJson) return;
      page.lastStateJson = event.data;
      page.state = JSON.parse(event.data);
      render();
    });
  }

  function setConnection(kind, text) {
    const node = $("connection");
    node.dataset.state = kind;
    node.textContent = text;
  }

  // -- lookups ----------------------------------------------------------------------------------

  function names() {
    const users = {};
    for (const u of page.state.slack.users) {
      users[u.id] = u.profile.display_name || u.real_name || u.name;
    }
    users.USLACKBOT = "Slackbot";
    users[page.state.slack.bot_user_id] = "Stopbot"; // the app's name, as Slack shows it
    const channels = {};
    for (const c of page.state.slack.channels) channels[c.id] = c.is_im ? "direct message" : c.name;
    return { users, channels };
  }

  function person(id) {
    return page.state.people.find((p) => p.id === id);
  }

  function conversations() {
    const all = page.state.slack.channels;
    return {
      channels: all.filter((c) => !c.is_im && !c.name.startsWith("mpdm-") && (!c.is_private || c.member)),
      dms: all.filter((c) => c.is_im && c.user === page.user),
    };
  }

  function conversationLabel(channel) {
    return channel.is_im ? "Stopbot" : channel.name;
  }

  function visibleMessages(channelId) {
    const publicOnes = (page.state.slack.messages[channelId] || []).map((m) => ({ message: m, ephemeral: false }));
    const mine = page.state.slack.ephemeral
      .filter((e) => e.channel === channelId && e.user === page.user)
      .flatMap((e) => e.messages.map((m) => ({ message: m, ephemeral: true })));
    return publicOnes.concat(mine).sort((a, b) => Number(a.message.ts) - Number(b.message.ts));
  }

  // -- rendering --------------------------------------------------------------------------------

  function render() {
    const state = page.state;
    if (!page.user || !person(page.user)) page.user = state.people[0].id;
    if (!page.channel) page.channel = state.home_channel;
    renderUserPicker();
    renderConversations();
    renderMessages();
    renderHome();
    renderModal();
    renderPanel();
  }

  function renderUserPicker() {
    const picker = $("user-picker");
    if (picker.options.length !== page.state.people.length) {
      picker.replaceChildren(...page.state.people.map((p) =>
        el("option", { value: p.id }, `${p.name} (${p.role})`)));
    }
    picker.value = page.user;
    const me = person(page.user);
    $("user-role").textContent = `${me.role} · ${me.tz}`;
  }

  function unread(channel) {
    const newest = visibleMessages(channel.id).at(-1);
    if (!newest) return 0;
    const seen = page.seen.get(`${page.user}:${channel.id}`) || 0;
    return visibleMessages(channel.id).filter((m) => Number(m.message.ts) > seen).length;
  }

  function renderConversations() {
    const { channels, dms } = conversations();
    if (![...channels, ...dms].some((c) => c.id === page.channel)) page.channel = page.state.home_channel;
    const item = (channel, prefix) => {
      const count = channel.id === page.channel ? 0 : unread(channel);
      const label = `${prefix}${conversationLabel(channel)}`;
      const button = el("button", {
        type: "button",
        class: "conversation-link",
        "aria-current": !page.home && channel.id === page.channel ? "page" : null,
        "data-channel": channel.id,
      }, label, count ? el("span", { class: "badge", "aria-label": `${count} new` }, String(count)) : null);
      button.addEventListener("click", () => selectChannel(channel.id));
      return el("li", {}, button);
    };
    $("channel-list").replaceChildren(...channels.map((c) => item(c, "# ")));
    $("dm-list").replaceChildren(...(dms.length ? dms.map((c) => item(c, "")) :
      [el("li", { class: "empty" }, "None yet: the bot opens one when it writes to you.")]));
    const current = page.state.slack.channels.find((c) => c.id === page.channel);
    const title = current.is_im ? `Direct messages with ${conversationLabel(current)}` : `# ${current.name}`;
    $("conversation-title").textContent = title;
    $("composer-label").textContent = current.is_im ? `Message ${conversationLabel(current)}` : `Message #${current.name}`;
  }

  function renderHome() {
    $("home-pane").hidden = !page.home;
    $("messages").hidden = page.home;
    $("composer-form").hidden = page.home;
    $("home-link").setAttribute("aria-current", page.home ? "page" : "false");
    if (!page.home) return;
    $("conversation-title").textContent = "Stopbot app: Home";
    const found = (page.state.slack.homes || []).find((h) => h.user === page.user);
    if (!found) return;
    const key = `${page.user}:${found.view.hash}`;
    if (key === page.homeKey) return;
    page.homeKey = key;
    const lookups = names();
    const ctx = {
      users: lookups.users,
      channels: lookups.channels,
      tz: person(page.user).tz,
      clockOffset: page.state.clock_offset,
      key: `h:${page.user}`,
      onButton: (element, position) => post("/playground/home/click", {
        user: page.user, block: position.block, element: position.element,
      }),
    };
    $("home-body").replaceChildren(renderBlocks(found.view.blocks, ctx));
  }

  function openHome() {
    page.home = true;
    page.homeKey = null;
    $("home-body").replaceChildren(el("p", { class: "empty" }, "Opening the Home tab…"));
    render();
    post("/playground/home", { user: page.user }); // app_home_opened: the bot publishes it
  }

  function selectChannel(channelId) {
    page.home = false;
    page.channel = channelId;
    page.rendered.clear();
    page.announcedKeys = null;
    $("messages").replaceChildren();
    render();
    $("composer").focus();
  }

  function messageKey(entry) {
    return `${entry.ephemeral ? "e" : "p"}:${entry.message.ts}`;
  }

  function renderMessages() {
    const list = $("messages");
    const lookups = names();
    const me = person(page.user);
    const entries = visibleMessages(page.channel);
    const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : null;
    const stickToBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const keep = new Set();
    const announcements = [];
    const added = [];
    const firstRender = page.announcedKeys === null;
    if (firstRender) page.announcedKeys = new Map();

    entries.forEach((entry, index) => {
      const key = messageKey(entry);
      keep.add(key);
      const json = JSON.stringify([entry.message, me.tz, page.state.clock_offset]);
      const existing = page.rendered.get(key);
      if (!existing || existing.json !== json) {
        const node = renderMessage(entry, key, lookups, me);
        if (existing) existing.node.replaceWith(node);
        else if (!firstRender) added.push(node);
        page.rendered.set(key, { json, node });
        const text = entry.message.text || "";
        const author = lookups.users[entry.message.user] || entry.message.user;
        if (!firstRender && entry.message.user !== page.user) {
          const before = page.announcedKeys.get(key);
          if (before === undefined) announcements.push(`${author}: ${text}`);
          else if (before !== text) announcements.push(`${author} updated: ${text}`);
        }
        page.announcedKeys.set(key, text);
      }
      const node = page.rendered.get(key).node;
      if (list.children[index] !== node) list.insertBefore(node, list.children[index] || null);
    });
    for (const [key, value] of page.rendered) {
      if (!keep.has(key)) {
        value.node.remove();
        page.rendered.delete(key);
      }
    }
    if (!entries.length) {
      list.replaceChildren(el("li", { class: "empty" }, "No messages yet. Type a command below, e.g. /stop list."));
      page.rendered.clear();
    } else if (list.querySelector(".empty")) {
      list.querySelector(".empty").remove();
    }
    if (focusKey && document.activeElement === document.body) {
      const again = list.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
      if (again) again.focus();
    }
    if (stickToBottom || firstRender) list.scrollTop = list.scrollHeight;
    // A message that arrives below the fold is brought into view, wherever the reader was.
    if (added.length) added.at(-1).scrollIntoView({ block: "nearest" });
    const newest = entries.at(-1);
    if (newest) page.seen.set(`${page.user}:${page.channel}`, Number(newest.message.ts));
    if (announcements.length) announce(announcements.slice(-3).join(". "));
  }

  function renderMessage(entry, key, lookups, me) {
    const message = entry.message;
    const bot = message.user === page.state.slack.bot_user_id || message.bot_id;
    const author = message.user === "USLACKBOT" ? "Slackbot" : lookups.users[message.user] || message.user;
    const ctx = {
      users: lookups.users,
      channels: lookups.channels,
      tz: me.tz,
      clockOffset: page.state.clock_offset,
      key,
      onButton: (element, position, node) => clickButton(entry, element, position, node),
      onSelect: (element, position, value, node) => chooseOption(entry, position, value, node),
    };
    const time = new Intl.DateTimeFormat("en-US", { timeZone: me.tz, hour: "numeric", minute: "2-digit" })
      .format(new Date(Number(message.ts) * 1000));
    return el("li", {
      class: `message${entry.ephemeral ? " ephemeral" : ""}${bot ? " from-bot" : ""}`,
      "data-ts": message.ts,
      "data-ephemeral": entry.ephemeral ? "true" : "false",
      "aria-label": `${author}${entry.ephemeral ? ", only visible to you" : ""}`,
    },
    el("div", { class: "avatar", "aria-hidden": "true" }, (author || "?").slice(0, 1).toUpperCase()),
    el("div", { class: "message-main" },
      el("div", { class: "message-meta" },
        el("span", { class: "author" }, author),
        bot ? el("span", { class: "app-badge" }, "APP") : null,
        el("time", { datetime: new Date(Number(message.ts) * 1000).toISOString() }, time),
        entry.ephemeral ? el("span", { class: "ephemeral-note" }, "Only visible to you") : null),
      renderMessageBody(message, ctx)));
  }

  async function clickButton(entry, element, position, node) {
    if (element.confirm && !(await confirmDialog(element.confirm))) return;
    // A modal this click opens keeps its colour on the submit: Deny (danger) stays red.
    page.openedBy = element.style || null;
    // A link button opens its page, and Slack still tells the app about the click.
    if (element.url && /^https?:/i.test(element.url)) window.open(element.url, "_blank", "noopener");
    await sendAction(entry, position, node, {});
  }

  // A menu's choice is an action too: the same request, with the option chosen.
  function chooseOption(entry, position, value, node) {
    return sendAction(entry, position, node, { option: value });
  }

  async function sendAction(entry, position, node, extra) {
    node.setAttribute("aria-busy", "true");
    await post("/playground/click", {
      user: page.user,
      channel: page.channel,
      message_ts: entry.message.ts,
      block: position.block,
      element: position.element,
      ephemeral: entry.ephemeral,
      ...extra,
    });
    node.removeAttribute("aria-busy");
  }

  // A button's confirm object, as Slack's client asks it.
  // https://docs.slack.dev/reference/block-kit/composition-objects/confirmation-dialog-object
  function confirmDialog(confirm) {
    const dialog = $("confirm-dialog");
    const lookups = names();
    $("confirm-title").textContent = plain(confirm.title) || "Are you sure?";
    $("confirm-text").replaceChildren(textObject(confirm.text, { ...lookups, tz: person(page.user).tz }));
    const yes = $("confirm-yes");
    const no = $("confirm-no");
    yes.textContent = plain(confirm.confirm) || "Yes";
    no.textContent = plain(confirm.deny) || "Cancel";
    yes.className = `bk-button bk-${confirm.style === "danger" ? "danger" : "primary"}`;
    return new Promise((resolve) => {
      const done = (answer) => {
        yes.onclick = null;
        no.onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      yes.onclick = () => done(true);
      no.onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
      no.focus();
    });
  }

  // -- modals ------------------------------------------------------------------------------------

  function myViews() {
    return page.state.slack.views.filter((v) => v.user === page.user);
  }

  function renderModal() {
    const dialog = $("modal");
    const top = myViews().at(-1);
    if (!top) {
      page.modalKey = null;
      if (dialog.open) dialog.close();
      return;
    }
    const view = top.view;
    const key = `${view.id}:${view.hash}`;
    if (key !== page.modalKey) {
      page.modalKey = key;
      const lookups = names();
      const ctx = {
        users: lookups.users,
        channels: lookups.channels,
        tz: person(page.user).tz,
        clockOffset: page.state.clock_offset,
        key: `v:${view.id}`,
        onButton: (element, position) => post("/playground/view/click", {
          user: page.user, view_id: view.id, block: position.block, element: position.element,
        }),
      };
      $("modal-title").textContent = plain(view.title) || "Stopbot";
      $("modal-body").replaceChildren(renderBlocks(view.blocks, ctx));
      $("modal-submit").hidden = !view.submit;
      $("modal-submit").className = `bk-button bk-${page.openedBy === "danger" ? "danger" : "primary"}`;
      $("modal-submit").textContent = plain(view.submit) || "Submit";
      $("modal-close").textContent = plain(view.close) || "Cancel";
      dialog.dataset.viewId = view.id;
      if (!dialog.open) dialog.showModal();
      const first = $("modal-body").querySelector("input, textarea, select, button");
      (first || $("modal-close")).focus();
    }
    renderModalErrors(top.errors || {});
  }

  function renderModalErrors(errors) {
    for (const node of $("modal-body").querySelectorAll("[data-error-for]")) {
      node.textContent = errors[node.dataset.errorFor] || "";
      const block = node.closest(".bk-input");
      if (block) block.classList.toggle("has-error", Boolean(errors[node.dataset.errorFor]));
    }
    $("modal-error").textContent = errors[""] || "";
    $("modal-error").hidden = !errors[""];
  }

  function modalValues() {
    const values = {};
    for (const control of $("modal-body").querySelectorAll("[data-block-id][data-action-id]")) {
      const { blockId, actionId, kind } = control.dataset;
      let value;
      if (kind === "checkboxes") {
        value = [...control.querySelectorAll("input:checked")].map((i) => i.value);
      } else if (kind === "radio_buttons") {
        value = control.querySelector("input:checked")?.value ?? null;
      } else {
        value = control.value === "" ? null : control.value;
      }
      values[blockId] = { ...(values[blockId] || {}), [actionId]: value };
    }
    return values;
  }

  // -- side panel -------------------------------------------------------------------------------

  function renderPanel() {
    const state = page.state;
    const lookups = names();
    const rows = state.resources.map((r) => {
      const locks = [];
      if (r.provider_lock) locks.push(`${r.provider}: ${r.provider_lock}`);
      if (r.bot_lock) locks.push(`Stopbot: ${lookups.users[r.bot_lock.owner] || r.bot_lock.owner}`);
      const approval = r.approvers.length
        ? el("span", { class: "tag" }, `approval: ${r.approvers.map((a) => lookups.users[a] || a).join(", ")}`)
        : null;
      return el("tr", { "data-resource": r.name },
        el("th", { scope: "row" }, r.name, el("br"), el("span", { class: "muted" }, r.provider), approval ? " " : null, approval),
        el("td", { class: `status${r.settled ? "" : " changing"}` }, r.status, r.settled ? null : el("span", { class: "muted" }, " (changing)"),
          r.startable ? el("button", {
            type: "button", class: "bk-button small", "data-start": r.name, "aria-label": `Start ${r.name}`,
          }, "Start") : null),
        el("td", {}, locks.length ? locks.join("; ") : el("span", { class: "muted" }, "none")));
    });
    $("resource-rows").replaceChildren(...rows);

    for (const id of ["break-resource"]) {
      const select = $(id);
      if (select.options.length !== state.resources.length) {
        const chosen = select.value;
        select.replaceChildren(...state.resources.map((r) => el("option", { value: r.name }, `${r.name} (${r.provider})`)));
        if (chosen) select.value = chosen;
      }
    }
    const owner = $("lock-owner");
    const others = state.people.filter((p) => p.id !== page.user);
    const ownerIds = [...owner.options].map((o) => o.value).join();
    if (ownerIds !== others.map((p) => p.id).join()) {
      owner.replaceChildren(...others.map((p) => el("option", { value: p.id }, p.name)));
    }

    $("fault-list").replaceChildren(...(state.faults.length ? state.faults.map((f) => el("li", {},
      `${f.resource || f.api}: ${describeFault(f)}${f.method ? " on the stop request" : " on every request"}, ${f.count === null ? "until cleared" : `${f.count} more`}`))
      : [el("li", { class: "muted" }, "None: every simulated API answers normally.")]));

    const offset = state.clock_offset;
    $("clock-note").textContent = offset > 0
      ? `Simulated time is ${formatSpan(offset)} ahead of your clock.` : "Simulated time follows your clock.";

    $("delivery-list").replaceChildren(...state.deliveries.slice().reverse().map((d) => el("li", {},
      el("code", {}, d.kind), ` ${lookups.users[d.user] || d.user}: ${d.summary} → `,
      d.error ? el("strong", { class: "bad" }, d.error) : `HTTP ${d.status}`)));
    $("call-list").replaceChildren(...state.slack.calls.slice().reverse().map((c) => el("li", {},
      el("code", {}, c.method), " → ", c.ok ? "ok" : el("strong", { class: "bad" }, c.error || `HTTP ${c.status}`))));
  }

  function describeFault(f) {
    if (f.kind === "latency") return `slow (${f.seconds} s)`;
    if (f.kind === "drop") return "dropped connection";
    return `HTTP ${f.status}`;
  }

  function formatSpan(seconds) {
    if (seconds < 60) return `${seconds} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  // -- wiring -------------------------------------------------------------------------------------

  function wire() {
    $("user-picker").addEventListener("change", (event) => {
      page.user = event.target.value;
      page.rendered.clear();
      page.announcedKeys = null;
      page.modalKey = null;
      $("messages").replaceChildren();
      if ($("modal").open) $("modal").close();
      if (page.home) openHome();
      else render();
    });
    $("home-link").addEventListener("click", openHome);

    $("composer-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("composer");
      const text = input.value.trim();
      if (!text) return;
      if (await post("/playground/message", { user: page.user, channel: page.channel, text })) {
        input.value = "";
      }
      input.focus();
    });

    const modal = $("modal");
    $("modal-form").addEventListener("submit", (event) => {
      event.preventDefault();
      post("/playground/view/submit", { user: page.user, view_id: modal.dataset.viewId, values: modalValues() });
    });
    const closeModal = () => post("/playground/view/close", { user: page.user, view_id: modal.dataset.viewId });
    $("modal-close").addEventListener("click", closeModal);
    modal.addEventListener("cancel", (event) => {
      event.preventDefault(); // Escape: close through the server, as Slack tells the app
      closeModal();
    });

    $("break-form").addEventListener("submit", (event) => {
      event.preventDefault();
      post("/playground/faults", {
        resource: $("break-resource").value,
        kind: $("fault-kind").value,
        stop_only: document.querySelector("input[name=fault-scope]:checked").value === "stop",
        repeat: $("fault-repeat").checked,
      });
    });
    $("lock-button").addEventListener("click", () =>
      post("/playground/lock", { resource: $("break-resource").value, owner: $("lock-owner").value }));
    $("unlock-button").addEventListener("click", () =>
      post("/playground/unlock", { resource: $("break-resource").value }));
    $("clear-faults").addEventListener("click", () => post("/playground/faults", undefined, "DELETE"));
    for (const button of document.querySelectorAll("[data-skip]")) {
      button.addEventListener("click", () => post("/playground/clock", { seconds: Number(button.dataset.skip) }));
    }
    $("alert-dismiss").addEventListener("click", hideAlert);
    $("resource-rows").addEventListener("click", (event) => {
      const button = event.target.closest("[data-start]");
      if (button) post("/playground/start", { resource: button.dataset.start });
    });
    $("reset-estate").addEventListener("click", async () => {
      if (await post("/playground/reset")) announce("The estate is as it was at the start.");
    });
  }

  wire();
  connect();
})();
