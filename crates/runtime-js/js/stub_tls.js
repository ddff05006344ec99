// Stands in for ext:deno_net/02_tls.js, which deno_fetch loads at startup.
// isola functions cannot open raw sockets or present client certificates.
(function () {
  return {
    loadTlsKeyPair() {
      throw new TypeError("TLS client certificates are not supported in isola functions");
    },
  };
})();
