// A throwaway PKI for the TLS suites, made at test time with OpenSSL's API (nothing secret is
// committed): a CA, a server certificate for localhost/127.0.0.1/::1, an expired one, one for
// another name, one from a CA nobody trusts, a client certificate (mutual TLS), and contexts
// built from them.
//
// - test_pki(): made once per process on first use (inside a test case: its helpers REQUIRE).
//   Every certificate is also written to a private directory (removed at exit) for peers and
//   options that take files (ca_file, cert_file, key_file, curl --cacert).
// - tls_server_context(cert_pem), tls_client_context(): contexts from it (REQUIRE that they
//   could be made).
#pragma once

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <coring/tls.hpp>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "test_util.hpp"

namespace coring_test {

namespace tls_detail {

struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct CertFree {
  void operator()(X509* cert) const { X509_free(cert); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;

inline void add_extension(X509* cert, X509V3_CTX* context, int nid, const char* value) {
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, context, nid, value);
  REQUIRE(extension != nullptr);
  X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
}

// A certificate for key, valid from `from` to `to` seconds from now, signed by issuer (null:
// self-signed); san like "DNS:localhost,IP:127.0.0.1" (empty: none).
inline Cert make_cert(const std::string& common_name, const std::string& san, EVP_PKEY* key,
                      X509* issuer, EVP_PKEY* issuer_key, bool ca, long from, long to) {
  static long serial = 5000;
  Cert cert(X509_new());
  X509* x = cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(x), from);
  X509_gmtime_adj(X509_getm_notAfter(x), to);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(x, key);
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer != nullptr ? issuer : x, x, nullptr, nullptr, 0);
  add_extension(x, &context, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  add_extension(x, &context, NID_key_usage,
                ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
  add_extension(x, &context, NID_subject_key_identifier, "hash");
  if (issuer != nullptr) add_extension(x, &context, NID_authority_key_identifier, "keyid");
  if (!ca) add_extension(x, &context, NID_ext_key_usage, "serverAuth,clientAuth");
  if (!san.empty()) add_extension(x, &context, NID_subject_alt_name, san.c_str());
  REQUIRE(X509_sign(x, issuer_key != nullptr ? issuer_key : key, EVP_sha256()) > 0);
  return cert;
}

// PEM text of what write() writes into a memory BIO.
template <class Write>
std::string pem_text(Write&& write) {
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(bio != nullptr);
  REQUIRE(write(bio) == 1);
  char* data = nullptr;
  long length = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<size_t>(length));
  BIO_free(bio);
  return text;
}

inline std::string pem_of(X509* cert) {
  return pem_text([cert](BIO* bio) { return PEM_write_bio_X509(bio, cert); });
}

inline std::string pem_of(EVP_PKEY* key) {
  return pem_text([key](BIO* bio) {
    return PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  });
}

}  // namespace tls_detail

struct TestPki {
  static constexpr long kDay = 24 * 3600;
  static constexpr const char* kLocalNames = "DNS:localhost,IP:127.0.0.1,IP:::1";

  TempDir dir;
  std::string ca;       // the CA the clients trust (PEM)
  std::string key;      // every leaf's private key (PEM)
  std::string server;   // localhost, 127.0.0.1, ::1; valid for 30 days
  std::string expired;  // the same names; expired yesterday
  std::string other;    // other.example only
  std::string rogue;    // localhost, 127.0.0.1, ::1, from a CA nobody trusts
  std::string client;   // a client certificate from the CA (mutual TLS)
  // The same as files in dir.
  std::string ca_file, key_file, server_file, expired_file, other_file, rogue_file;

  TestPki() {
    using namespace tls_detail;
    Key ca_key(EVP_EC_gen("P-256")), rogue_key(EVP_EC_gen("P-256")), leaf_key(EVP_EC_gen("P-256"));
    REQUIRE((ca_key && rogue_key && leaf_key));
    Cert ca_cert = make_cert("coring TLS server test CA", "", ca_key.get(), nullptr, nullptr, true,
                             -kDay, 30 * kDay);
    Cert rogue_ca =
        make_cert("coring rogue CA", "", rogue_key.get(), nullptr, nullptr, true, -kDay, 30 * kDay);
    auto leaf = [&](const char* name, const char* san, X509* issuer, EVP_PKEY* issuer_key,
                    long from, long to) {
      return pem_of(
          make_cert(name, san, leaf_key.get(), issuer, issuer_key, false, from, to).get());
    };
    ca = pem_of(ca_cert.get());
    key = pem_of(leaf_key.get());
    server = leaf("localhost", kLocalNames, ca_cert.get(), ca_key.get(), -kDay, 30 * kDay);
    expired = leaf("localhost", kLocalNames, ca_cert.get(), ca_key.get(), -30 * kDay, -kDay);
    other =
        leaf("other.example", "DNS:other.example", ca_cert.get(), ca_key.get(), -kDay, 30 * kDay);
    rogue = leaf("localhost", kLocalNames, rogue_ca.get(), rogue_key.get(), -kDay, 30 * kDay);
    client = leaf("coring test client", "", ca_cert.get(), ca_key.get(), -kDay, 30 * kDay);
    ca_file = write("ca.pem", ca);
    key_file = write("key.pem", key);
    server_file = write("server.pem", server);
    expired_file = write("expired.pem", expired);
    other_file = write("other.pem", other);
    rogue_file = write("rogue.pem", rogue);
  }

  std::string write(const std::string& name, const std::string& text) {
    std::string path = dir.file(name);
    std::ofstream(path) << text;
    return path;
  }
};

inline TestPki& test_pki() {
  static TestPki made;
  return made;
}

// A server context with cert_pem (default: the valid localhost certificate) and the PKI's key.
inline coring::TlsContext tls_server_context(const std::string& cert_pem = test_pki().server,
                                             coring::TlsOptions options = {}) {
  options.cert_pem = cert_pem;
  options.key_pem = test_pki().key;
  std::optional<coring::TlsContext> context = coring::TlsContext::server(options);
  REQUIRE_MESSAGE(context.has_value(), coring::TlsContext::last_error_message());
  return *context;
}

// A client context that trusts the PKI's CA (unless options names CAs of its own).
inline coring::TlsContext tls_client_context(coring::TlsOptions options = {}) {
  if (options.ca_pem.empty() && options.ca_file.empty() && options.ca_path.empty()) {
    options.ca_pem = test_pki().ca;
  }
  std::optional<coring::TlsContext> context = coring::TlsContext::client(options);
  REQUIRE_MESSAGE(context.has_value(), coring::TlsContext::last_error_message());
  return *context;
}

}  // namespace coring_test
