import hello from "./hello.js";
console.log(JSON.stringify(await hello({ name: "world" })));
