export default { fetch() { for (;;) {} } };
