// The backfill list reloads itself every few seconds while a backfill is queued or running,
// so its progress moves without a click. It holds still while the user has changed anything
// on the page (rows selected for the "cancel" action, an action chosen, a search being
// typed): a reload would throw that away.
"use strict";
{
  const seconds = Number(document.currentScript.dataset.seconds) || 5;
  const changed = (field) => {
    if (field.type === "checkbox" || field.type === "radio") {
      return field.checked !== field.defaultChecked;
    }
    if (field.tagName === "SELECT") {
      return Array.from(field.options).some((option) => option.selected !== option.defaultSelected);
    }
    return field.value !== field.defaultValue;
  };
  const busy = () =>
    Array.from(document.querySelectorAll("#changelist input, #changelist select")).some(changed);
  window.setInterval(() => {
    if (!busy()) {
      window.location.reload();
    }
  }, seconds * 1000);
}
