// fieldstation's page: confirm stop buttons; detection rows seek the recording's player.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  if (button.classList.contains("seek")) {
    const player = document.getElementById("player");
    if (player) {
      player.currentTime = Number(button.dataset.start);
      player.play();
    }
  }
});
