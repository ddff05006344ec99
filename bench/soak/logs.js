export default { fetch() { for (;;) console.log(); } };
