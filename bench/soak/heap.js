export default { fetch() { const all = []; for (;;) all.push(new Array(100000).fill({ x: 1 })); } };
