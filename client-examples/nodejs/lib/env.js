// Reading the examples' configuration from the environment.

export function env(name, fallback) {
  const value = process.env[name] || fallback;
  if (!value) {
    console.error(`set ${name}`);
    process.exit(2);
  }
  return value;
}

export function optional(name) {
  return process.env[name] || undefined;
}

export const truthy = (name) => ['1', 'true', 'yes'].includes((process.env[name] ?? '').toLowerCase());

/** Resolves on Ctrl-C / SIGTERM (or after `ms`, if given): the examples stop cleanly. */
export function stopSignal(ms) {
  return new Promise((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
    if (ms) setTimeout(resolve, ms).unref();
  });
}
