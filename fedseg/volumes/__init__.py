"""Medical volumes: NIfTI, DICOM series, NRRD and MetaImage in; 2.5D and 3D training and inference;
NIfTI predictions with the input's geometry; millimetre metrics. Import the submodules you need
(``fedseg.volumes.io``, ``.loading``, ...): this package imports nothing heavy on its own."""
