// PostHog-like remote config (assets host, array/<token>/config.js),
// written for tagproxy's tests: the project's settings as a global.
(function (w) {
  w._POSTHOG_REMOTE_CONFIG = w._POSTHOG_REMOTE_CONFIG || {};
  w._POSTHOG_REMOTE_CONFIG["phc_TEST123"] = {
    config: { sessionRecording: { endpoint: "/s/" }, autocapture_opt_out: true },
    siteApps: [],
  };
})(window);
