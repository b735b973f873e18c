"""Field hardware: a GPIO button (:mod:`.press`, :mod:`.button`), a status LED (:mod:`.led`),
the actions of presses through the control API (:mod:`.actions`) and Wi-Fi provisioning
(:mod:`.wifi`, :mod:`.portal`). See docs/field-hardware.md."""
