// UET-like per-tag settings (bat.bing.com/p/action/<tag id>.js), written for
// tagproxy's tests (no vendor code).
(window.uetConfigs = window.uetConfigs || {})["5566778"] = { spa: true };
