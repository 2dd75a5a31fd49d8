// The page's languages: one message catalogue per language (messages-*.js), the choice remembered in
// localStorage, the default from navigator.languages; numbers, dates and times via Intl in that language.
import de from "./messages-de.js";
import en from "./messages-en.js";

const CATALOGUES = { de, en };
const LOCALES = { de: "de-DE", en: "en-GB" };
const LANG_KEY = "sparcs.lang";
let current = "en";

// The remembered language, else the first of the browser's languages the page has, else English.
export function initialLanguage() {
  const stored = localStorage.getItem(LANG_KEY);
  if (stored && CATALOGUES[stored]) return stored;
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (CATALOGUES[base]) return base;
  }
  return "en";
}

export function setLanguage(lang, remember = false) {
  current = CATALOGUES[lang] ? lang : "en";
  if (remember) localStorage.setItem(LANG_KEY, current);
  document.documentElement.lang = current;
}

export const language = () => current;
export const locale = () => LOCALES[current];

// The text of ``key`` in the current language with {name} filled from ``params``; the key itself if unknown.
export function t(key, params = {}) {
  const text = CATALOGUES[current][key] ?? CATALOGUES.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

// ``key`` + "." + the plural category of ``n`` in the current language (one, other, ...), else "key.other".
export function tn(key, n, params = {}) {
  const category = new Intl.PluralRules(locale()).select(n);
  const full = `${key}.${category}`;
  return t(full in CATALOGUES[current] || full in CATALOGUES.en ? full : `${key}.other`, { n, ...params });
}

// Puts the catalogue's texts into the static page: data-i18n (text), data-i18n-aria (aria-label),
// data-i18n-placeholder.
export function translatePage(root = document) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-aria]")) node.setAttribute("aria-label", t(node.dataset.i18nAria));
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
}
