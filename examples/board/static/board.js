// board.js: what the board adds to bastion.js, through the events it dispatches.
// No build step. Every page works without it (and without any JavaScript).
//
//   - A refusal that is about no one field (429, 403, an expired form) shows in the
//     form's [data-form-error], beside its button: bastion.js shows it only in a
//     [data-bastion-result], which a form that moves on after success has not.
//   - An internal error reads "Something went wrong — reference <digest>", as the
//     page says it without JavaScript.
//   - A result in an <output data-json> is shown as indented JSON.
// Text only, through textContent: nothing from a reply becomes markup.
(function () {
  "use strict";

  function describe(error) {
    if (error.code === "internal" && error.digest) {
      return "Something went wrong — reference " + error.digest;
    }
    return error.message || "Something went wrong.";
  }

  document.addEventListener("bastion:error", function (event) {
    var form = event.target;
    var slot = form.querySelector("[data-bastion-result]") || form.querySelector("[data-form-error]");
    if (slot) slot.textContent = describe(event.detail || {});
  });

  document.addEventListener("bastion:ok", function (event) {
    var form = event.target;
    var slot = form.querySelector("[data-form-error]");
    if (slot) slot.textContent = "";
    var output = form.querySelector("output[data-json]");
    if (!output) return;
    var pretty = JSON.stringify(event.detail, null, 2);
    // bastion.js writes its own text right after this event: write ours after it.
    window.setTimeout(function () { output.textContent = pretty; }, 0);
  });

  // A new submission clears the last refusal, whichever way the form is sent.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    form.querySelectorAll("[data-form-error], [data-bastion-message]").forEach(function (slot) {
      slot.textContent = "";
    });
  }, true);
})();
