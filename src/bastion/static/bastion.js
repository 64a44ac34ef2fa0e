// bastion.js: progressive enhancement for action forms. No build step, no dependencies.
//
// A <form data-bastion> still works without this script (a plain post, answered 303).
// With it, the form is sent with fetch and the JSON reply is shown in the form:
//   <output data-bastion-result>   receives the result (or the error message)
//   <span data-bastion-error="name">  receives the message for field `name`
// Everything is written with textContent: a reply can never inject markup.
(function () {
  "use strict";

  function show(form, reply) {
    form.querySelectorAll("[data-bastion-error]").forEach(function (el) {
      el.textContent = "";
    });
    var result = form.querySelector("[data-bastion-result]");
    if (reply.ok) {
      form.dispatchEvent(new CustomEvent("bastion:ok", { detail: reply.data, bubbles: true }));
      if (result) {
        var data = reply.data;
        // A reply with a message shows it; anything else shows as JSON text.
        result.textContent =
          typeof data === "string" ? data
          : data && typeof data.message === "string" ? data.message
          : JSON.stringify(data);
      }
      return;
    }
    var err = reply.error || { message: "Something went wrong." };
    var fields = err.fields || {};
    Object.keys(fields).forEach(function (name) {
      var slot = form.querySelector('[data-bastion-error="' + CSS.escape(name) + '"]');
      if (slot) slot.textContent = fields[name];
    });
    form.dispatchEvent(new CustomEvent("bastion:error", { detail: err, bubbles: true }));
    if (result) {
      result.textContent = err.message + (err.digest ? " (reference " + err.digest + ")" : "");
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-bastion")) return;
    event.preventDefault();
    var body = new FormData(form);
    var encoded = form.enctype === "multipart/form-data" ? body : new URLSearchParams(body);
    fetch(form.action, {
      method: "POST",
      body: encoded,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.json();
      })
      .catch(function () {
        return { ok: false, error: { message: "The server could not be reached." } };
      })
      .then(function (reply) {
        show(form, reply);
      });
  });
})();
