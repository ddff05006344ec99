export default () => { let x = []; for (let i = 0; i < 22; i++) x = [x, x]; return x; };
