import hello from "./hello.js";
self.onmessage = async (e) => {
  const result = await hello(e.data);
  self.postMessage(result);
};
