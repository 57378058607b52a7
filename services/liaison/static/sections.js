// Border sections of the example agreement (deploy/agreement.example.yaml), drawn on the
// console's map. APPROXIMATE: each line is a handful of [latitude, longitude] points traced by
// hand along the general course of the state border (rivers, lakes and known crossing points as
// shown on ordinary public maps), a few kilometres off at best. Good enough to say "which stretch
// of the border"; never for navigation, never to decide which side of the border a point is on.
// A section shared by two parties (LT-LV and LV-LT, ...) is the same line seen from each side.
// Another agreement's sections are simply not drawn; the map then shows the point alone.

const LT_LV = [[56.07, 21.06], [56.40, 22.00], [56.38, 22.90], [56.15, 24.00], [56.35, 24.90], [55.95, 26.00], [55.67, 26.63]];
const LT_PL = [[54.36, 22.79], [54.20, 23.10], [54.00, 23.45], [53.94, 23.51]];
const LV_EE = [[57.52, 27.35], [57.60, 26.90], [57.85, 26.05], [57.80, 25.40], [58.05, 25.25], [57.90, 24.35]];
const PL_UA = [[51.55, 23.60], [51.00, 24.10], [50.55, 24.00], [50.35, 23.60], [49.80, 22.95], [49.55, 22.70], [49.08, 22.56]];

export const SECTIONS = {
  "LT-BY-VILNIUS": { party: "LT-VSAT", line: [[55.67, 26.63], [55.45, 26.72], [55.20, 26.45], [54.95, 26.05], [54.70, 25.80], [54.50, 25.75], [54.30, 25.55], [54.15, 25.10]] },
  "LT-BY-DRUSKININKAI": { party: "LT-VSAT", line: [[54.15, 25.10], [54.20, 24.80], [54.05, 24.45], [53.99, 24.05], [53.94, 23.51]] },
  "LT-RU-PAGEGIAI": { party: "LT-VSAT", line: [[55.30, 21.25], [55.13, 21.91], [55.08, 22.40], [54.95, 22.85], [54.60, 22.85], [54.36, 22.79]] },
  "LT-LV": { party: "LT-VSAT", line: LT_LV },
  "LT-PL": { party: "LT-VSAT", line: LT_PL },
  "LV-BY-LATGALE": { party: "LV-VRS", line: [[55.67, 26.63], [55.80, 27.20], [55.98, 27.65], [56.00, 28.15], [56.17, 28.17]] },
  "LV-RU-LUDZA": { party: "LV-VRS", line: [[56.17, 28.17], [56.50, 28.05], [56.85, 27.90], [57.25, 27.85], [57.52, 27.35]] },
  "LV-LT": { party: "LV-VRS", line: LT_LV },
  "LV-EE": { party: "LV-VRS", line: LV_EE },
  "PL-BY-PODLASKIE": { party: "PL-SG", line: [[53.94, 23.51], [53.50, 23.65], [53.10, 23.90], [52.70, 23.92], [52.35, 23.20], [52.08, 23.65], [51.55, 23.60]] },
  "PL-UA-PODKARPACKIE": { party: "PL-SG", line: PL_UA },
  "PL-RU-WARMINSKO": { party: "PL-SG", line: [[54.36, 22.79], [54.40, 21.50], [54.45, 20.30], [54.46, 19.65]] },
  "PL-LT": { party: "PL-SG", line: LT_PL },
  "EE-RU-NARVA": { party: "EE-PPA", line: [[59.47, 28.05], [59.37, 28.20], [59.20, 28.00], [58.98, 27.73]] },
  "EE-RU-PEIPUS": { party: "EE-PPA", line: [[58.98, 27.73], [58.70, 27.50], [58.35, 27.55], [58.00, 27.70], [57.85, 27.55], [57.52, 27.35]] },
  "EE-LV": { party: "EE-PPA", line: LV_EE },
  "UA-BY-VOLYN": { party: "UA-DPSU", line: [[51.55, 23.60], [51.60, 24.30], [51.90, 25.20], [51.95, 25.90]] },
  "UA-BY-POLISSIA": { party: "UA-DPSU", line: [[51.95, 25.90], [51.80, 27.00], [51.60, 28.50], [51.50, 30.00], [51.40, 30.55]] },
  "UA-PL": { party: "UA-DPSU", line: PL_UA },
};

// The section codes of one party, in the agreement's order.
export function sectionsOf(party) {
  return Object.entries(SECTIONS).filter(([, s]) => s.party === party).map(([code]) => code);
}
