# Sourced by the prepare scripts: `download PKG...` fetches Debian packages into the
# current directory (never installs them); lists too stale to have them are
# refreshed once and the download retried.
download() {
  apt-get download "$@" >/dev/null 2>&1 && return 0
  apt-get update -qq && apt-get download "$@" >/dev/null 2>&1
}
