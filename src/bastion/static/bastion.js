// bastion.js: progressive enhancement for action forms. No build step, no dependencies.
//
// A <form data-bastion> (what action_form() renders) works without this script: a
// plain post, answered 303, with the outcome shown once on the next page. With it:
//   - the form is sent with fetch, its token in X-CSRF-Token, asking for JSON;
//   - the submit buttons are disabled while the call is pending;
//   - <output data-bastion-result> receives the result or the error message; a form
//     without one follows its _next on success, as the plain post would, and shows an
//     error in [data-bastion-message] (made at the top of the form if missing);
//   - forms htmx sends (hx-post) are left to htmx;
//   - <... data-bastion-error="name"> receives the message for field `name`, and the
//     field is marked aria-invalid;
//   - errors are announced in an aria-live region;
//   - a step-up refusal (401 reauthentication_required, recent_login(page=...)) goes to
//     that page, ?next= this one, unless a listener of "bastion:reauthenticate" calls
//     preventDefault() to prompt its own way.
// Everything is written with textContent: a reply can never inject markup.
//
// A page's own scripts call actions with bastion.call(action, data): a Promise of the
// reply's JSON envelope ({ok: true, data} or {ok: false, error: {code, message}}), never
// rejected for a refusal or a network failure. `action` is what action_url() renders
// (or the action's ID); `data` is sent as JSON. The token comes from
// <meta name="csrf-token"> (csrf_meta()) or else the page's first _csrf field, and goes in
// X-CSRF-Token, with the page's own cookies and nothing for another origin.
(function () {
  "use strict";

  // Where this script is served, {prefix}/bastion.js: action IDs are below the same prefix.
  var script = document.currentScript;
  var prefix = script && script.src
    ? new URL(script.src).pathname.replace(/\/bastion\.js$/, "")
    : "";

  function unreachable() {
    return { ok: false, error: { code: "network", message: "The server could not be reached." } };
  }

  function send(url, body, token, type) {
    var headers = { Accept: "application/json" };
    if (token) headers["X-CSRF-Token"] = token;
    if (type) headers["Content-Type"] = type;
    return fetch(url, { method: "POST", body: body, credentials: "same-origin", headers: headers })
      .then(function (response) { return response.json(); })
      .catch(unreachable);
  }

  function pageToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) return meta.content;
    var field = document.querySelector('input[name="_csrf"]');
    return field ? field.value : "";
  }

  function call(action, data) {
    var path = String(action);
    if (path.indexOf("/") === -1) path = prefix + "/" + encodeURIComponent(path);
    var url = new URL(path, window.location.href);
    // The token is a secret of this page's session: it never goes to another origin.
    if (url.origin !== window.location.origin) {
      var message = "bastion.call: " + url.origin + " is not this page's origin";
      return Promise.reject(new TypeError(message));
    }
    var body = JSON.stringify(data === undefined ? {} : data);
    return send(url.href, body, pageToken(), "application/json");
  }

  window.bastion = window.bastion || {};
  window.bastion.call = call;

  var live;
  function announce(text) {
    if (!live) {
      live = document.createElement("div");
      live.setAttribute("role", "alert");
      live.setAttribute("aria-live", "assertive");
      live.className = "bastion-live";
      live.style.cssText = "position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)";
      document.body.appendChild(live);
    }
    live.textContent = text;
  }

  function text(data) {
    if (typeof data === "string") return data;
    if (data && typeof data.message === "string") return data.message;
    return JSON.stringify(data);
  }

  function show(form, reply) {
    form.querySelectorAll("[data-bastion-error]").forEach(function (slot) {
      slot.textContent = "";
    });
    form.querySelectorAll("[aria-invalid]").forEach(function (field) {
      field.removeAttribute("aria-invalid");
    });
    var result = form.querySelector("[data-bastion-result]");
    if (reply.ok) {
      var next = form.querySelector('input[name="_next"]');
      if (result) result.textContent = text(reply.data);
      // Dispatched once the result is shown, so a listener can restyle it.
      form.dispatchEvent(new CustomEvent("bastion:ok", { detail: reply.data, bubbles: true }));
      if (!result && next && next.value) follow(next.value);
      return;
    }
    var err = reply.error || { message: "Something went wrong." };
    var fields = err.fields || {};
    Object.keys(fields).forEach(function (name) {
      var slot = form.querySelector('[data-bastion-error="' + CSS.escape(name) + '"]');
      if (slot) slot.textContent = fields[name];
      var field = form.elements.namedItem(name);
      if (field && field.setAttribute) field.setAttribute("aria-invalid", "true");
    });
    var message = err.message + (err.digest ? " (reference " + err.digest + ")" : "");
    // A form without a result slot still shows its error where it is seen, not only
    // to screen readers.
    var slot = result || form.querySelector("[data-bastion-message]");
    if (!slot) {
      slot = document.createElement("p");
      slot.setAttribute("data-bastion-message", "");
      slot.className = "bastion-error";
      form.insertBefore(slot, form.firstChild);
    }
    slot.textContent = message;
    announce(message);
    form.dispatchEvent(new CustomEvent("bastion:error", { detail: err, bubbles: true }));
    if (err.code === "reauthentication_required") reauthenticate(form, err);
  }

  // Where the plain post would land: a 303 there loads the page. Assigning a URL that
  // differs from this one by its #fragment only scrolls, and would leave what the call
  // changed (a revoked token still listed) on the screen: this page is loaded again.
  function follow(next) {
    var target = new URL(next, window.location.href);
    var here = window.location;
    if (target.origin === here.origin && target.pathname === here.pathname && target.search === here.search) {
      window.history.replaceState(null, "", target.href);
      window.location.reload();
    } else {
      window.location.assign(target.href);
    }
  }

  // A step-up action (recent_login) refused an older log-in: the page that asks for
  // the password again, which sends the member back here. A page's own script may show
  // its own prompt instead: preventDefault() on "bastion:reauthenticate".
  function reauthenticate(form, err) {
    var go = form.dispatchEvent(
      new CustomEvent("bastion:reauthenticate", { detail: err, bubbles: true, cancelable: true })
    );
    if (go && typeof err.page === "string" && err.page.charAt(0) === "/" && err.page.charAt(1) !== "/") {
      window.location.assign(err.page + "?next=" + encodeURIComponent(window.location.pathname));
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-bastion")) return;
    // Someone else (htmx, the page's own script) already sends this form.
    if (event.defaultPrevented || form.hasAttribute("hx-post") || form.hasAttribute("data-hx-post")) {
      return;
    }
    if (form.getAttribute("aria-busy") === "true") {
      event.preventDefault();
      return;
    }
    event.preventDefault();
    var body = new FormData(form);
    var token = form.querySelector('input[name="_csrf"]');
    var buttons = form.querySelectorAll("button, input[type=submit]");
    form.setAttribute("aria-busy", "true");
    buttons.forEach(function (b) { b.disabled = true; });
    // The browser sets the form's content type (and a multipart boundary) from the body.
    if (form.enctype !== "multipart/form-data") body = new URLSearchParams(body);
    send(form.action, body, token ? token.value : "")
      .then(function (reply) {
        form.removeAttribute("aria-busy");
        buttons.forEach(function (b) { b.disabled = false; });
        show(form, reply);
      });
  });
})();
