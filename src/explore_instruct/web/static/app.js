/* Keyboard shortcuts. Rater page: 1-4 vote, left/right arrows move between items.
   Review pages: "/" focuses the search box. Keys typed into a field are never shortcuts. */
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  var target = event.target;
  if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.isContentEditable)) return;
  var vote = document.getElementById("vote");
  if (vote) {
    var button = vote.querySelector('button[data-key="' + event.key + '"]');
    if (button) {
      event.preventDefault();
      button.click();
      return;
    }
  }
  var rel = { ArrowLeft: "prev", ArrowRight: "next" }[event.key];
  if (rel) {
    var link = document.querySelector('a[rel="' + rel + '"]');
    if (link) {
      event.preventDefault();
      link.click();
    }
    return;
  }
  if (event.key === "/") {
    var search = document.getElementById("search");
    if (search) {
      event.preventDefault();
      search.focus();
    }
  }
});
