// Block Kit and mrkdwn, rendered into DOM nodes the way Slack's client shows them.
//
// Everything is built with createElement and text nodes: the bot's text is never parsed as
// HTML, so a message cannot inject markup into the page.
//   https://docs.slack.dev/reference/block-kit/blocks
//   https://docs.slack.dev/messaging/formatting-message-text
"use strict";

(function () {
  // The emoji the bot uses, and a few common ones; any other :name: stays as written.
  const EMOJI = {
    white_check_mark: "\u2705", heavy_check_mark: "\u2714\uFE0F", x: "\u274C",
    hourglass: "\u231B", hourglass_flowing_sand: "\u23F3", no_entry: "\u26D4",
    no_entry_sign: "\uD83D\uDEAB", information_source: "\u2139\uFE0F",
    arrows_counterclockwise: "\uD83D\uDD04", lock: "\uD83D\uDD12", unlock: "\uD83D\uDD13",
    warning: "\u26A0\uFE0F", octagonal_sign: "\uD83D\uDED1", stop_sign: "\uD83D\uDED1",
    eyes: "\uD83D\uDC40", thumbsup: "\uD83D\uDC4D", "+1": "\uD83D\uDC4D",
    thumbsdown: "\uD83D\uDC4E", "-1": "\uD83D\uDC4E", bell: "\uD83D\uDD14",
    calendar: "\uD83D\uDCC5", clock3: "\uD83D\uDD52", red_circle: "\uD83D\uDD34",
    large_green_circle: "\uD83D\uDFE2", large_yellow_circle: "\uD83D\uDFE1",
    rotating_light: "\uD83D\uDEA8", zap: "\u26A1", tada: "\uD83C\uDF89",
    question: "\u2753", heavy_plus_sign: "\u2795", robot_face: "\uD83E\uDD16",
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function decodeEntities(text) {
    return text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
  }

  function emojify(text) {
    return text.replace(/:([a-z0-9_+\-]+):/g, (whole, name) => EMOJI[name] || whole);
  }

  // -- dates: <!date^1795636800^{date_short_pretty} {time_secs}|fallback> -------------------

  function ordinal(n) {
    const rest = n % 100;
    if (rest >= 11 && rest <= 13) return n + "th";
    return n + ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
  }

  function parts(date, tz, options) {
    const out = {};
    for (const p of new Intl.DateTimeFormat("en-US", { timeZone: tz, ...options }).formatToParts(date)) {
      out[p.type] = p.value;
    }
    return out;
  }

  function dayKey(date, tz) {
    const p = parts(date, tz, { year: "numeric", month: "2-digit", day: "2-digit" });
    return `${p.year}-${p.month}-${p.day}`;
  }

  function formatDate(seconds, format, ctx) {
    const tz = ctx.tz || "UTC";
    const date = new Date(seconds * 1000);
    const now = new Date(Date.now() + (ctx.clockOffset || 0) * 1000);
    const long = parts(date, tz, { weekday: "long", year: "numeric", month: "long", day: "numeric" });
    const short = parts(date, tz, { year: "numeric", month: "short", day: "numeric" });
    const day = Number(long.day);
    const tokens = {
      date_num: dayKey(date, tz),
      date: `${long.month} ${ordinal(day)}, ${long.year}`,
      date_short: `${short.month} ${day}, ${short.year}`,
      date_long: `${long.weekday}, ${long.month} ${ordinal(day)}, ${long.year}`,
      time: new Intl.DateTimeFormat("en-US", { timeZone: tz, hour: "numeric", minute: "2-digit" }).format(date),
      time_secs: new Intl.DateTimeFormat("en-US", {
        timeZone: tz, hour: "numeric", minute: "2-digit", second: "2-digit",
      }).format(date),
    };
    const relative = { [dayKey(now, tz)]: "today" };
    relative[dayKey(new Date(now - 86400000), tz)] = "yesterday";
    relative[dayKey(new Date(now.getTime() + 86400000), tz)] = "tomorrow";
    const pretty = relative[tokens.date_num];
    tokens.date_pretty = pretty || tokens.date;
    tokens.date_short_pretty = pretty || tokens.date_short;
    tokens.date_long_pretty = pretty || tokens.date_long;
    const ago = Math.round((now - date) / 1000);
    tokens.ago = ago < 60 ? "just now" : ago < 3600 ? `${Math.floor(ago / 60)} minutes ago`
      : ago < 86400 ? `${Math.floor(ago / 3600)} hours ago` : `${Math.floor(ago / 86400)} days ago`;
    return format.replace(/\{(\w+)\}/g, (whole, name) => tokens[name] || whole);
  }

  // -- <...> tokens: mentions, channels, dates, links ---------------------------------------

  function special(inner, ctx) {
    const [target, label] = splitOnce(inner, "|");
    if (target.startsWith("@")) {
      const id = target.slice(1);
      const name = label || (ctx.users && ctx.users[id]) || id;
      return el("span", { class: "mention", title: id }, "@" + name);
    }
    if (target.startsWith("#")) {
      const id = target.slice(1);
      const name = label || (ctx.channels && ctx.channels[id]) || id;
      return el("span", { class: "mention" }, "#" + name);
    }
    if (target.startsWith("!date^")) {
      const [, seconds, format] = target.split("^");
      const shown = Number.isFinite(Number(seconds))
        ? formatDate(Number(seconds), format || "{date_short}", ctx) : label || inner;
      return el("time", { datetime: new Date(Number(seconds) * 1000).toISOString(), title: label || "" }, shown);
    }
    if (target.startsWith("!subteam^")) {
      const id = target.slice("!subteam^".length);
      return el("span", { class: "mention" }, label || "@" + id);
    }
    if (target.startsWith("!")) {
      return el("span", { class: "mention" }, "@" + (label || target.slice(1)));
    }
    // Only web and mail links: a javascript: URL from a message must not become clickable.
    if (/^(https?:|mailto:)/i.test(target)) {
      const href = decodeEntities(target);
      return el("a", { href, target: "_blank", rel: "noopener noreferrer" }, decodeEntities(label) || href);
    }
    return document.createTextNode("<" + decodeEntities(inner) + ">");
  }

  function splitOnce(text, sep) {
    const at = text.indexOf(sep);
    return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + 1)];
  }

  // Inline styles: Slack wants the markers at word boundaries (so snake_case stays as is).
  const INLINE = new RegExp(
    [
      "<([^<>\\n]+)>",                                    // 1: special token
      "`([^`\\n]+)`",                                     // 2: code
      "(?<![\\w*])\\*(?!\\s)([^*\\n]+?)(?<!\\s)\\*(?![\\w*])", // 3: bold
      "(?<![\\w_])_(?!\\s)([^_\\n]+?)(?<!\\s)_(?![\\w_])",     // 4: italic
      "(?<![\\w~])~(?!\\s)([^~\\n]+?)(?<!\\s)~(?![\\w~])",     // 5: strike
    ].join("|"),
    "g",
  );

  function inline(text, ctx) {
    const out = [];
    let last = 0;
    for (const match of text.matchAll(INLINE)) {
      if (match.index > last) out.push(...plainWithBreaks(text.slice(last, match.index)));
      if (match[1] !== undefined) out.push(special(match[1], ctx));
      else if (match[2] !== undefined) out.push(el("code", {}, decodeEntities(match[2])));
      else if (match[3] !== undefined) out.push(el("strong", {}, inline(match[3], ctx)));
      else if (match[4] !== undefined) out.push(el("em", {}, inline(match[4], ctx)));
      else if (match[5] !== undefined) out.push(el("s", {}, inline(match[5], ctx)));
      last = match.index + match[0].length;
    }
    if (last < text.length) out.push(...plainWithBreaks(text.slice(last)));
    return out;
  }

  function plainWithBreaks(text) {
    const lines = emojify(decodeEntities(text)).split("\n");
    const out = [];
    lines.forEach((line, i) => {
      if (i > 0) out.push(el("br"));
      if (line) out.push(document.createTextNode(line));
    });
    return out;
  }

  function mrkdwn(text, ctx) {
    const root = el("span", { class: "mrkdwn" });
    const pieces = String(text || "").split("```");
    pieces.forEach((piece, i) => {
      if (i % 2 === 1) {
        root.append(el("pre", {}, decodeEntities(piece.replace(/^\n/, ""))));
        return;
      }
      // Block quotes: lines starting with ">" (Slack sends it escaped as &gt;).
      const lines = piece.split("\n");
      let buffer = [];
      let quote = [];
      const flush = () => {
        if (buffer.length) root.append(...inline(buffer.join("\n"), ctx));
        buffer = [];
      };
      const flushQuote = () => {
        if (quote.length) root.append(el("blockquote", {}, inline(quote.join("\n"), ctx)));
        quote = [];
      };
      for (const line of lines) {
        const quoted = line.match(/^(?:&gt;|>)\s?(.*)$/);
        if (quoted) {
          flush();
          quote.push(quoted[1]);
        } else {
          flushQuote();
          buffer.push(line);
        }
      }
      flush();
      flushQuote();
    });
    return root;
  }

  function textObject(obj, ctx) {
    if (!obj) return el("span");
    if (obj.type === "mrkdwn") return mrkdwn(obj.text, ctx);
    const text = obj.emoji === false ? obj.text : emojify(String(obj.text || ""));
    return el("span", { class: "plain" }, text);
  }

  function plain(obj) {
    return obj && typeof obj.text === "string" ? emojify(obj.text) : "";
  }

  // -- elements -------------------------------------------------------------------------------

  function button(element, ctx, position) {
    const style = element.style === "primary" || element.style === "danger" ? element.style : "default";
    const node = el(
      "button",
      {
        type: "button",
        class: `bk-button bk-${style}`,
        "data-focus-key": `${ctx.key || ""}:${position.block}:${position.element ?? "accessory"}`,
        "data-action-id": element.action_id || "",
      },
      plain(element.text),
    );
    if (element.url) {
      node.title = element.url;
    }
    if (ctx.onButton) {
      node.addEventListener("click", () => ctx.onButton(element, position, node));
    } else {
      node.disabled = true;
    }
    return node;
  }

  function imageElement(element) {
    const safe = /^https?:/i.test(element.image_url || "");
    return safe
      ? el("img", { class: "bk-image-el", src: element.image_url, alt: element.alt_text || "", referrerpolicy: "no-referrer", loading: "lazy" })
      : el("span", { class: "bk-unsupported" }, element.alt_text || "[image]");
  }

  function unsupported(what) {
    return el("span", { class: "bk-unsupported" }, `[${what} is not shown in the playground]`);
  }

  // A menu: choosing an option is the action (Slack sends block_actions at once).
  // https://docs.slack.dev/reference/block-kit/block-elements/select-menu-element
  function staticSelect(element, ctx, position) {
    const option = (o) => el("option", { value: o.value }, plain(o.text));
    const choices = (element.option_groups || []).length
      ? element.option_groups.map((g) => el("optgroup", { label: plain(g.label) }, ...(g.options || []).map(option)))
      : (element.options || []).map(option);
    const placeholder = el("option", { value: "", disabled: true, selected: true }, plain(element.placeholder) || "Select an item");
    const node = el(
      "select",
      {
        class: "bk-select",
        "data-focus-key": `${ctx.key || ""}:${position.block}:${position.element ?? "accessory"}`,
        "data-action-id": element.action_id || "",
        "aria-label": plain(element.placeholder) || "Select an item",
      },
      placeholder,
      ...choices,
    );
    if (ctx.onSelect) {
      node.addEventListener("change", () => ctx.onSelect(element, position, node.value, node));
    } else {
      node.disabled = true;
    }
    return node;
  }

  function actionElement(element, ctx, position) {
    if (element.type === "button") return button(element, ctx, position);
    if (element.type === "static_select") return staticSelect(element, ctx, position);
    if (element.type === "image") return imageElement(element);
    return unsupported(`a ${element.type} element`);
  }

  // -- modal inputs: each carries data-block-id / data-action-id for submission --------------

  function inputElement(block, index, ctx) {
    const element = block.element || {};
    const blockId = block.block_id || `b${index}`;
    const actionId = element.action_id || `a${index}`;
    const id = `input-${blockId}-${actionId}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const errorId = `${id}-error`;
    const hintId = `${id}-hint`;
    const described = [block.hint ? hintId : null, errorId].filter(Boolean).join(" ");
    const data = { "data-block-id": blockId, "data-action-id": actionId, "data-kind": element.type };
    const labelText = plain(block.label) + (block.optional ? " (optional)" : "");
    const required = !block.optional;
    let control;
    let labelNode = el("label", { for: id, class: "bk-label" }, labelText);
    const options = element.options || [];
    if (element.type === "plain_text_input") {
      const attrs = {
        id, ...data, "aria-describedby": described, required,
        placeholder: plain(element.placeholder) || null,
        minlength: element.min_length || null, maxlength: element.max_length || null,
      };
      control = element.multiline ? el("textarea", { rows: 4, ...attrs }) : el("input", { type: "text", ...attrs });
      control.value = element.initial_value || "";
    } else if (element.type === "static_select") {
      control = el("select", { id, ...data, "aria-describedby": described, required },
        el("option", { value: "" }, plain(element.placeholder) || "Choose…"),
        options.map((o) => el("option", { value: o.value }, plain(o.text))));
      if (element.initial_option) control.value = element.initial_option.value;
    } else if (element.type === "radio_buttons" || element.type === "checkboxes") {
      const type = element.type === "radio_buttons" ? "radio" : "checkbox";
      const initial = new Set(
        (element.initial_options || (element.initial_option ? [element.initial_option] : [])).map((o) => o.value),
      );
      labelNode = null;
      control = el("fieldset", { ...data, "aria-describedby": described, class: "bk-choices" },
        el("legend", { class: "bk-label" }, labelText),
        options.map((o, i) => el("label", { class: "bk-choice" },
          el("input", { type, name: id, value: o.value, id: `${id}-${i}`, checked: initial.has(o.value) }),
          " ", plain(o.text))));
    } else if (element.type === "datepicker" || element.type === "timepicker") {
      control = el("input", { id, ...data, type: element.type === "datepicker" ? "date" : "time", "aria-describedby": described, required });
      control.value = element.initial_date || element.initial_time || "";
    } else {
      return el("div", { class: "bk-block bk-input" }, unsupported(`a ${element.type} input`));
    }
    return el("div", { class: "bk-block bk-input", "data-block-id": blockId },
      labelNode, control,
      block.hint ? el("p", { class: "bk-hint", id: hintId }, plain(block.hint)) : null,
      el("p", { class: "bk-error", id: errorId, role: "alert", "data-error-for": blockId }));
  }

  // -- blocks ---------------------------------------------------------------------------------

  function richText(block, ctx) {
    const renderInline = (elements) => (elements || []).map((e) => {
      if (e.type === "text") {
        let node = document.createTextNode(e.text);
        const s = e.style || {};
        if (s.code) node = el("code", {}, node);
        if (s.bold) node = el("strong", {}, node);
        if (s.italic) node = el("em", {}, node);
        if (s.strike) node = el("s", {}, node);
        return node;
      }
      if (e.type === "link") return special(`${e.url}|${e.text || e.url}`, ctx);
      if (e.type === "user") return special(`@${e.user_id}`, ctx);
      if (e.type === "channel") return special(`#${e.channel_id}`, ctx);
      if (e.type === "emoji") return document.createTextNode(EMOJI[e.name] || `:${e.name}:`);
      return document.createTextNode(e.text || "");
    });
    return el("div", { class: "bk-block bk-rich" }, (block.elements || []).map((section) => {
      if (section.type === "rich_text_list") {
        const tag = section.style === "ordered" ? "ol" : "ul";
        return el(tag, {}, (section.elements || []).map((item) => el("li", {}, renderInline(item.elements))));
      }
      if (section.type === "rich_text_preformatted") return el("pre", {}, renderInline(section.elements));
      if (section.type === "rich_text_quote") return el("blockquote", {}, renderInline(section.elements));
      return el("p", {}, renderInline(section.elements));
    }));
  }

  function renderBlock(block, index, ctx) {
    switch (block.type) {
      case "header":
        return el("div", { class: "bk-block bk-header", role: "heading", "aria-level": "3" }, textObject(block.text, ctx));
      case "section": {
        const body = el("div", { class: "bk-section-body" });
        if (block.text) body.append(el("div", { class: "bk-section-text" }, textObject(block.text, ctx)));
        if (block.fields) {
          body.append(el("div", { class: "bk-fields" }, block.fields.map((f) => el("div", { class: "bk-field" }, textObject(f, ctx)))));
        }
        const accessory = block.accessory
          ? el("div", { class: "bk-accessory" }, actionElement(block.accessory, ctx, { block: index, element: null }))
          : null;
        return el("div", { class: "bk-block bk-section" }, body, accessory);
      }
      case "context":
        return el("div", { class: "bk-block bk-context" }, (block.elements || []).map((e) =>
          e.type === "image" ? imageElement(e) : el("span", { class: "bk-context-item" }, textObject(e, ctx))));
      case "divider":
        return el("hr", { class: "bk-block bk-divider" });
      case "actions":
        return el("div", { class: "bk-block bk-actions", role: "group", "aria-label": "Actions" },
          (block.elements || []).map((e, i) => actionElement(e, ctx, { block: index, element: i })));
      case "image":
        return el("figure", { class: "bk-block bk-image" }, imageElement(block),
          block.title ? el("figcaption", {}, plain(block.title)) : null);
      case "input":
        return inputElement(block, index, ctx);
      case "rich_text":
        return richText(block, ctx);
      default:
        return el("div", { class: "bk-block" }, unsupported(`a ${block.type} block`));
    }
  }

  function renderBlocks(blocks, ctx) {
    return el("div", { class: "bk-blocks" }, (blocks || []).map((b, i) => renderBlock(b, i, ctx)));
  }

  function renderAttachments(attachments, ctx) {
    return (attachments || []).map((a) => el("div", { class: "bk-attachment", style: a.color ? `border-left-color:${/^#?[0-9a-f]{3,6}$/i.test(a.color) ? (a.color.startsWith("#") ? a.color : "#" + a.color) : "#ddd"}` : null },
      a.pretext ? mrkdwn(a.pretext, ctx) : null,
      a.title ? el("div", { class: "bk-attachment-title" }, a.title) : null,
      a.text ? mrkdwn(a.text, ctx) : null,
      a.fields ? el("div", { class: "bk-fields" }, a.fields.map((f) => el("div", { class: "bk-field" }, el("strong", {}, f.title || ""), el("br"), mrkdwn(f.value || "", ctx)))) : null,
      a.blocks ? renderBlocks(a.blocks, { ...ctx, onButton: null }) : null,
      a.footer ? el("div", { class: "bk-context" }, a.footer) : null));
  }

  // A message's content: its blocks, else its text as mrkdwn; then any attachments.
  function renderMessageBody(message, ctx) {
    const body = el("div", { class: "message-body" });
    if (message.blocks && message.blocks.length) body.append(renderBlocks(message.blocks, ctx));
    else if (message.text) body.append(mrkdwn(message.text, ctx));
    if (message.attachments) body.append(...renderAttachments(message.attachments, ctx));
    return body;
  }

  window.BlockKit = { el, mrkdwn, plain, textObject, renderBlocks, renderMessageBody, formatDate };
})();
