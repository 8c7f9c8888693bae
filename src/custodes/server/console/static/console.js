// After htmx swaps in a new page body, move the keyboard focus to its main content (as a full load would put a
// screen reader at the top of the new page) and say the page's confirmation, if any.
document.addEventListener("htmx:afterSettle", function () {
  var main = document.getElementById("main");
  if (main) {
    main.focus({ preventScroll: true });
  }
});
