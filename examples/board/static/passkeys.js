// passkeys.js: the browser's half of the board's passkeys (examples/board/passkeys.py).
// No build step, no dependencies, nothing from another origin.
//
//   [data-passkey-sign-in]   the login page's "Sign in with a passkey"
//   [data-passkey-register]  the profile's "Add a passkey"
//
// Each names its two actions (data-begin, data-finish: what action_url() renders). A
// click asks the board for options (bastion.call: the page's CSRF token in a header),
// hands them to navigator.credentials, and sends the answer back as JSON. WebAuthn speaks
// ArrayBuffers, JSON speaks base64url: the conversions are below. Both stay hidden where
// the browser has no WebAuthn (and without JavaScript, as passkeys need it). Messages are
// written with textContent only.
(function () {
  "use strict";

  if (!window.PublicKeyCredential || !navigator.credentials) return;

  // --- base64url <-> ArrayBuffer ---------------------------------------------------------

  function toBuffer(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    base64 += "===".slice((base64.length + 3) % 4);
    var binary = window.atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return window.btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (c) {
      return { type: c.type, id: toBuffer(c.id), transports: c.transports };
    });
  }

  function creationOptions(json) {
    var options = JSON.parse(json);
    options.challenge = toBuffer(options.challenge);
    options.user.id = toBuffer(options.user.id);
    options.excludeCredentials = descriptors(options.excludeCredentials);
    return options;
  }

  function requestOptions(json) {
    var options = JSON.parse(json);
    options.challenge = toBuffer(options.challenge);
    options.allowCredentials = descriptors(options.allowCredentials);
    return options;
  }

  function registrationJSON(credential) {
    var response = credential.response;
    return JSON.stringify({
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: toText(response.clientDataJSON),
        attestationObject: toText(response.attestationObject),
        transports: response.getTransports ? response.getTransports() : []
      },
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults()
    });
  }

  function assertionJSON(credential) {
    var response = credential.response;
    return JSON.stringify({
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: toText(response.clientDataJSON),
        authenticatorData: toText(response.authenticatorData),
        signature: toText(response.signature),
        userHandle: response.userHandle ? toText(response.userHandle) : null
      },
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults()
    });
  }

  // --- one ceremony ----------------------------------------------------------------------

  // What the browser's refusals mean to the person in front of it.
  function browserMessage(error) {
    if (error && error.name === "InvalidStateError") {
      return "This device already holds a passkey for your account.";
    }
    if (error && error.name === "NotAllowedError") return "No passkey was used.";
    return "This browser could not use a passkey here.";
  }

  function Refused(error) {
    this.error = error;
  }

  // begin → navigator.credentials → finish; resolves with the finish's data, rejects with
  // a Refused({code, message}).
  function ceremony(box, ask, answer, extra) {
    return window.bastion.call(box.getAttribute("data-begin"), {})
      .then(function (reply) {
        if (!reply.ok) throw new Refused(reply.error);
        return ask(reply.data.options).catch(function (error) {
          throw new Refused({ code: "browser", message: browserMessage(error) });
        });
      })
      .then(function (credential) {
        if (!credential) throw new Refused({ code: "browser", message: browserMessage(null) });
        var body = Object.assign({ credential: answer(credential) }, extra || {});
        return window.bastion.call(box.getAttribute("data-finish"), body);
      })
      .then(function (reply) {
        if (!reply.ok) throw new Refused(reply.error);
        return reply.data;
      });
  }

  function wire(box, run) {
    var button = box.querySelector("[data-passkey-button]");
    var slot = box.querySelector("[data-passkey-message]");
    box.hidden = false;
    button.addEventListener("click", function () {
      if (!window.bastion || !window.bastion.call) return;
      button.disabled = true;
      box.setAttribute("aria-busy", "true");
      if (slot) slot.textContent = "";
      run().catch(function (refused) {
        var error = refused instanceof Refused ? refused.error : {};
        if (error.code === "reauthentication_required") {
          // The profile's "soon after a log-in" rule: the page the refusal names (as
          // bastion.js goes there for a form), the password again, then back here.
          var page = typeof error.page === "string" && /^\/(?!\/)/.test(error.page) ? error.page : "/reauth";
          window.location.assign(page + "?next=" + encodeURIComponent(window.location.pathname));
          return;
        }
        if (slot) slot.textContent = error.message || "Something went wrong.";
      }).then(function () {
        button.disabled = false;
        box.removeAttribute("aria-busy");
      });
    });
  }

  // Where to go once signed in: one of the board's own paths only.
  function samePath(value) {
    return /^\/(?!\/)[A-Za-z0-9_\/-]*$/.test(value || "") ? value : "/";
  }

  document.querySelectorAll("[data-passkey-sign-in]").forEach(function (box) {
    wire(box, function () {
      return ceremony(
        box,
        function (json) { return navigator.credentials.get({ publicKey: requestOptions(json) }); },
        assertionJSON
      ).then(function () {
        window.location.assign(samePath(box.getAttribute("data-next")));
      });
    });
  });

  document.querySelectorAll("[data-passkey-register]").forEach(function (box) {
    wire(box, function () {
      var name = box.querySelector("[data-passkey-name]");
      var extra = name && name.value.trim() ? { name: name.value.trim() } : {};
      return ceremony(
        box,
        function (json) { return navigator.credentials.create({ publicKey: creationOptions(json) }); },
        registrationJSON,
        extra
      ).then(function () {
        window.location.reload();  // the list shows the new passkey
      });
    });
  });
})();
