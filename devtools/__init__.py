"""Development tooling of the pack: the pinned host environment, the host as a server, stand-in models,
the host's editor in a browser. Tests, scripts and benchmarks import it as `devtools` (each puts the repository
root on sys.path once: pytest through pyproject.toml's `pythonpath`, scripts and benchmarks with one
line). Nothing of the pack imports it; the host only imports the pack's own __init__.py, so this
folder is inert in custom_nodes/.

    pack_env          where the pinned host lives; importing the pack (`stable_cascade_pack`) and the host in-process
    host_server       the real host as a subprocess with the pack installed, and a client for it
    standin_models    tiny seeded Stable Cascade networks written as the released files are
    standin_controlnets  seeded random ControlNets of the released layout that fit the tiny Stage C
    standin_clip_g    a seeded random CLIP-G text encoder file (made once per machine)
    editor_browser    the host's own editor (its frontend) in headless Chromium, driven by Playwright

Linux-only facilities (prctl, process groups, flock, symlinks) are used where present and replaced
by portable ones on Windows and macOS.
"""
