// The same WebSocket echo for `deno serve`, in Deno's API.
export default {
  fetch(request) {
    if (request.headers.get("upgrade") !== "websocket") {
      return new Response("WebSockets only", { status: 426 });
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = (event) => socket.send(event.data);
    return response;
  },
};
