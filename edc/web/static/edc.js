/* edc: the little JavaScript beyond htmx, progressive enhancement only (every page works without it).
   The case form: when the server's evaluation of the form body is swapped in (htmx, after the user left a
   field), the field the user has moved on to keeps what they typed (or ticked) while the request was on its way. */
(function () {
  "use strict";
  var typing = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var active = document.activeElement;
    typing = null;
    if (active && active.id && event.detail.target && event.detail.target.contains(active)) {
      typing = {id: active.id, value: active.value, kind: active.type, checked: active.checked,
                start: active.selectionStart, end: active.selectionEnd};
    }
  });
  document.addEventListener("htmx:afterSettle", function () {
    if (!typing) { return; }
    var field = document.getElementById(typing.id);
    if (field) {
      if (typing.kind === "radio" || typing.kind === "checkbox") {
        field.checked = typing.checked;
      } else if (field.value !== typing.value) {
        field.value = typing.value;
      }
      field.focus();
      try {
        if (typing.start !== null && typing.start !== undefined) { field.setSelectionRange(typing.start, typing.end); }
      } catch (ignored) { /* inputs of type date or number have no selection */ }
    }
    typing = null;
  });
}());
