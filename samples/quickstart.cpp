// The README's first example: a TCP echo server and a client in one container.
#include <coring/coring.hpp>
#include <cstdio>
#include <string>

int main() {
  int status = Co::run([] {
    Co::Socket listener;
    if (!listener.bind("127.0.0.1", 0) || !listener.listen()) {
      std::printf("listen: %s\n", std::string(listener.error_message()).c_str());
      return;
    }
    Co::create([&] {  // the server: runs at once, until it first waits (in accept)
      while (auto connection = listener.accept()) {
        Co::create([socket = std::move(*connection)]() mutable {  // one coroutine per client
          char buffer[4096];
          ssize_t n;
          while ((n = socket.recv(buffer, sizeof buffer)) > 0) {
            if (socket.send_all(buffer, static_cast<size_t>(n)) != n) break;
          }
        });
      }
    });

    Co::Socket client;
    if (!client.connect("localhost", listener.local_port())) {
      std::printf("connect: %s\n", std::string(client.error_message()).c_str());
      return;
    }
    client.send_all("hello", 5);
    char reply[5];
    if (client.recv_all(reply, sizeof reply, std::chrono::seconds(1)) == 5) {
      std::printf("%.5s\n", reply);
    }
    listener.close();  // the server's accept() returns empty: it ends; so does run()
  });
  return status == 0 ? 0 : 1;
}
