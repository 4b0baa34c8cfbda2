// The variable editor is a React component; in Node only its name is needed.
export const VariableQueryEditor = () => null;
