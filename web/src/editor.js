// The Dockerfile editor: CodeMirror 6 with the legacy Dockerfile mode, line
// numbers, and a mark on the line the server rejected.
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { HighlightStyle, StreamLanguage, bracketMatching, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { dockerFile } from "@codemirror/legacy-modes/mode/dockerfile";
import { EditorState, StateEffect, StateField } from "@codemirror/state";
import { Decoration, EditorView, GutterMarker, drawSelection, gutter, highlightActiveLine, highlightActiveLineGutter, highlightSpecialChars, keymap, lineNumbers } from "@codemirror/view";
import { tags as t } from "@lezer/highlight";

const setErrorLine = StateEffect.define(); // {line, message} or null

const errorLineDeco = Decoration.line({ class: "cm-error-line", attributes: { "data-error-line": "true" } });

// errorField holds the rejected line's position, mapped through edits.
const errorField = StateField.define({
  create: () => null,
  update(value, tr) {
    for (const e of tr.effects) {
      if (e.is(setErrorLine)) {
        if (!e.value) return null;
        const n = Math.min(Math.max(1, e.value.line), tr.state.doc.lines);
        return { pos: tr.state.doc.line(n).from, message: e.value.message };
      }
    }
    if (value && tr.docChanged) return { ...value, pos: tr.changes.mapPos(value.pos) };
    return value;
  },
  provide: (f) => [
    EditorView.decorations.from(f, (v) => (v ? Decoration.set([errorLineDeco.range(v.pos)]) : Decoration.none)),
  ],
});

class ErrorMarker extends GutterMarker {
  constructor(message) { super(); this.message = message; }
  eq(other) { return other.message === this.message; }
  toDOM() {
    const el = document.createElement("span");
    el.className = "cm-error-marker";
    el.textContent = "!";
    el.title = this.message;
    el.setAttribute("aria-hidden", "true");
    return el;
  }
}

const errorGutter = gutter({
  class: "cm-error-gutter",
  lineMarker(view, line) {
    const v = view.state.field(errorField);
    return v && line.from === view.state.doc.lineAt(v.pos).from ? new ErrorMarker(v.message) : null;
  },
  lineMarkerChange: (update) => update.startState.field(errorField) !== update.state.field(errorField),
  initialSpacer: () => new ErrorMarker(""),
});

const highlight = HighlightStyle.define([
  { tag: t.keyword, color: "#0d47a1", fontWeight: "600" },
  { tag: t.comment, color: "#6b7280", fontStyle: "italic" },
  { tag: t.string, color: "#1b5e20" },
  { tag: [t.variableName, t.special(t.variableName)], color: "#8e24aa" },
  { tag: t.number, color: "#b45309" },
  { tag: [t.operator, t.punctuation], color: "#374151" },
  { tag: t.atom, color: "#b45309" },
]);

const theme = EditorView.theme({
  // The editor grows with its text from 12 lines up to 30, then scrolls.
  "&": { fontSize: "13.5px", backgroundColor: "#fff", maxHeight: "630px" },
  ".cm-scroller": { fontFamily: "var(--mono)", lineHeight: "1.55", overflow: "auto" },
  ".cm-content, .cm-gutter": { minHeight: "250px" },
  ".cm-content": { padding: "8px 0", caretColor: "#111" },
  ".cm-gutters": { backgroundColor: "#f7f8fa", color: "#8a94a6", borderRight: "1px solid #e3e7ee" },
  ".cm-activeLine": { backgroundColor: "#f3f6fc" },
  ".cm-activeLineGutter": { backgroundColor: "#e9eef8", color: "#374151" },
  "&.cm-focused": { outline: "none" },
  ".cm-error-line": { backgroundColor: "#fdecea", boxShadow: "inset 3px 0 0 #d32f2f" },
  ".cm-error-gutter .cm-gutterElement": { padding: "0 2px 0 4px", minWidth: "16px" },
});

// createDockerfileEditor mounts an editor in parent. onChange is called with
// the text after every edit. label names the editor for screen readers.
export function createDockerfileEditor(parent, { doc, onChange, label, describedBy, readOnly = false }) {
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        lineNumbers(),
        errorGutter,
        highlightActiveLineGutter(),
        highlightSpecialChars(),
        history(),
        drawSelection(),
        indentOnInput(),
        bracketMatching(),
        highlightActiveLine(),
        StreamLanguage.define(dockerFile),
        syntaxHighlighting(highlight),
        errorField,
        theme,
        EditorState.readOnly.of(readOnly),
        EditorView.contentAttributes.of({ "aria-label": label, ...(describedBy ? { "aria-describedby": describedBy } : {}) }),
        // Tab indents; Escape then Tab leaves the editor (CodeMirror's focus escape).
        keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
        EditorView.updateListener.of((u) => {
          if (u.docChanged && onChange) onChange(u.state.doc.toString());
        }),
      ],
    }),
  });
  return {
    view,
    get text() { return view.state.doc.toString(); },
    set text(value) {
      if (value !== view.state.doc.toString()) {
        view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: value } });
      }
    },
    // markLine marks line (1-based) as rejected with message and scrolls to it; 0 clears.
    markLine(line, message = "") {
      const effects = [setErrorLine.of(line > 0 ? { line, message } : null)];
      if (line > 0) {
        const n = Math.min(line, view.state.doc.lines);
        effects.push(EditorView.scrollIntoView(view.state.doc.line(n).from, { y: "center" }));
      }
      view.dispatch({ effects });
    },
    markedLine() {
      const v = view.state.field(errorField);
      return v ? view.state.doc.lineAt(v.pos).number : 0;
    },
    focusLine(line) {
      const n = Math.min(Math.max(1, line), view.state.doc.lines);
      view.dispatch({ selection: { anchor: view.state.doc.line(n).from }, scrollIntoView: true });
      view.focus();
    },
    destroy() { view.destroy(); },
  };
}
