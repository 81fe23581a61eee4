"""Attribution with Captum: pixels, frame stacks, tokens, encoder channels and game objects,
with sanity checks. Every function returns data; ``plots`` draws it."""
